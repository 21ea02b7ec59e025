"""Errors in the client's format: JSON for the JSON formats, the page for people, else plain text.

Every error is `Cache-Control: no-store` (a response signal in `app` adds it to
aiohttp's own errors too).
"""

from __future__ import annotations

from aiohttp import web

from aggregator.params import MAX_QUERY, ParamError
from aggregator.render.formats import HTML, Format
from aggregator.render.page import render_form
from aggregator.web.state import CONFIG

NO_STORE = {"Cache-Control": "no-store"}


def bad_request(
    request: web.Request,
    fmt: Format,
    error: ParamError,
    variant: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A 400 that names the parameter and its rule, in the format the client asked for."""
    return error_response(request, fmt, 400, str(error), {"parameter": error.param}, variant, headers)


def too_many(
    request: web.Request,
    fmt: Format,
    retry_after: float,
    variant: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """429: this caller is over its limit; nothing was asked upstream."""
    seconds = int(retry_after)
    headers = {**(headers or {}), "Retry-After": str(seconds)}
    message = f"Too many requests: try again in {seconds} s."
    return error_response(request, fmt, 429, message, {"retry_after": seconds}, variant, headers)


def error_response(
    request: web.Request,
    fmt: Format,
    status: int,
    message: str,
    fields: dict[str, object],
    variant: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error in the client's format: JSON for the JSON formats, the page for people, else text."""
    headers = {**(headers or {}), **NO_STORE}
    if fmt.media_type.endswith("json"):
        return web.json_response({"error": message, **fields}, status=status, headers=headers)
    if fmt is HTML:
        config = request.app[CONFIG]
        html = render_form(
            config.server.public_url,
            config.description.short_name,
            q=request.query.get("q", "")[:MAX_QUERY],
            error=message,
            embed=variant == "embed",
            language=config.description.language,
        )
        return web.Response(text=html, content_type=HTML.media_type, status=status, headers=headers)
    prefix = "Bad request: " if status == 400 else ""
    return web.Response(status=status, text=f"{prefix}{message}\n", headers=headers)
