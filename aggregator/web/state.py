"""What the app keeps (typed `web.AppKey`s): set by `app.create_app` and its cleanup context, read by handlers."""

from __future__ import annotations

from aiohttp import web

from aggregator.config import Config
from aggregator.web.cors import Cors
from aggregator.web.httpcache import Resource
from aggregator.web.services import Services

CONFIG = web.AppKey("config", Config)
SERVICES = web.AppKey("services", Services)  # from start-up to shutdown
PAGE_HEADERS = web.AppKey[dict[str, str]]("page_headers")  # security headers of every HTML page
EMBED_HEADERS = web.AppKey[dict[str, str]]("embed_headers")  # the same for the compact layout
CORS_POLICY = web.AppKey("cors", Cors)
RESOURCES = web.AppKey[dict[str, Resource]]("resources")  # bodies that depend on the config alone
