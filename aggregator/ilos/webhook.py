"""ilos's upload webhook: `POST /hooks/ilos/{org_id}/{secret}` (contract: "Filters, fresh subscriptions, webhooks").

ilos POSTs to a Recording or Uploading API call's `video_endpoint` once the
video is uploaded, with a JSON body (the vendor's API page, "Webhooks"):
`token`, `randtag`, `videoURL`, `embedURL`, `iframe`, `video_endpoint_extras`.
Pointed at this route, it lets a new upload show in subscribed feeds within a
minute instead of at the end of `search_ttl`.

The secret in the path is the only credential ilos can carry (it sends no
signature), so it is compared in constant time, and a wrong one looks exactly
like a route that does not exist. The body's `token` is the recording
session's, not ours: it is read past, never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from aiohttp import ClientPayloadError, web

from aggregator.config import Config
from aggregator.model import RANDTAG_RE

MAX_BODY = 16 * 1024


@dataclass(frozen=True, slots=True)
class Upload:
    org_id: str
    randtag: str


class HookRefused(Exception):
    """What to answer instead: `status` and a reason safe to show (never the secret)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def secret_matches(config: Config, org_id: str, secret: str) -> bool:
    """Constant time whatever is wrong: an unknown org costs the same comparison as a wrong secret."""
    org = config.org(org_id)
    expected = org.webhook_secret if org is not None else None
    given = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()
    wanted = hashlib.sha256((expected or "").encode()).digest()
    return hmac.compare_digest(given, wanted) and expected is not None


async def read_upload(request: web.Request, org_id: str) -> Upload:
    """The upload a webhook body announces; raises HookRefused for a body too large or not ilos's."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise HookRefused(413, f"the body is over {MAX_BODY // 1024} KB")
    body = bytearray()
    try:
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > MAX_BODY:
                raise HookRefused(413, f"the body is over {MAX_BODY // 1024} KB")
    except (ConnectionError, ClientPayloadError):  # the caller hung up mid-body: nothing to answer
        raise HookRefused(400, "the body ended before its length") from None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise HookRefused(400, "the body is not JSON") from None
    randtag = doc.get("randtag") if isinstance(doc, dict) else None
    if not isinstance(randtag, str) or not RANDTAG_RE.fullmatch(randtag):
        raise HookRefused(400, "the body has no valid randtag")
    return Upload(org_id, randtag)
