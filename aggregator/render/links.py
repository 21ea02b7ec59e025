"""Where a result leads from inside a sandboxed frame: a signed redirect on this service's host.

WordPress frames an embed it discovered with `sandbox="allow-scripts"`: no link may leave the
frame by itself. Its host script (wp-embed.js) opens a link the frame asks for, but only one on
the frame's own host (and only while the frame has focus). So the compact page (/embed) gives each
result, beside its upstream link, this service's `/link?to=…&sig=…`, which redirects there.

The signature (HMAC-SHA256 of the link, truncated) means the redirect leads only where a page of
this service pointed: never an open redirect. Its key is `server.signing_secret`, or, where none is
set, a digest of the org keys; both are the same on every replica that shares the config, so a
link rendered by one process opens in any other. A key that changes only breaks the links of
pages rendered before it changed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from aggregator.config import Config

PATH = "/link"
MAX_TARGET = 2048  # characters: longer is not a link a page of ours shows


def link_key(config: Config) -> bytes:
    """The signing key: derived, so the secret it comes from never signs anything directly."""
    if config.server.signing_secret is not None:
        material = config.server.signing_secret.encode()
    else:
        material = b"\0".join(sorted(o.api_key.encode() for o in config.orgs))
    return hashlib.sha256(b"ilos-aggregator result links\0" + material).digest()


def signed_link(base_url: str, key: bytes, target: str) -> str:
    """This host's redirect to `target`, for a frame that may only ask for links on its own host."""
    return f"{base_url}{PATH}?{urlencode({'to': target, 'sig': _signature(key, target)})}"


def verified_target(key: bytes, query: Mapping[str, str]) -> str | None:
    """The http(s) URL a `/link` request may be sent to; None unless this service signed it."""
    target, signature = query.get("to", ""), query.get("sig", "")
    if not target or len(target) > MAX_TARGET or any(c <= " " or c == "\x7f" for c in target):
        return None  # a header value must not carry them, whoever signed it
    try:
        scheme = urlsplit(target).scheme
    except ValueError:
        return None
    if scheme not in ("http", "https"):
        return None
    if not hmac.compare_digest(signature.encode(), _signature(key, target).encode()):
        return None
    return target


def _signature(key: bytes, target: str) -> str:
    return hmac.new(key, target.encode(), hashlib.sha256).hexdigest()[:32]
