"""`POST /hooks/ilos/{org_id}/{secret}`: ilos's upload webhook.

The secret is compared in constant time and a wrong one is a 404, as for any
path that does not exist; the body is bounded and parsed in `ilos.webhook`.
"""

from __future__ import annotations

import logging

from aiohttp import web

from aggregator.ilos import webhook
from aggregator.store import keys
from aggregator.web.errors import NO_STORE
from aggregator.web.state import CONFIG, SERVICES

log = logging.getLogger(__name__)


async def ilos_upload(request: web.Request) -> web.Response:
    """Look the new video's duration up and refresh the org's subscribed feeds first."""
    services = request.app[SERVICES]
    metrics = services.metrics
    org_id = request.match_info["org_id"]
    if not webhook.secret_matches(request.app[CONFIG], org_id, request.match_info["secret"]):
        metrics.webhooks.labels("refused").inc()
        raise web.HTTPNotFound()  # as for any path that does not exist
    try:
        upload = await webhook.read_upload(request, org_id)
    except webhook.HookRefused as exc:
        metrics.webhooks.labels("too_large" if exc.status == 413 else "bad_json").inc()
        return web.json_response({"error": exc.reason}, status=exc.status, headers=NO_STORE)
    # A randtag handled within search_ttl changes nothing: ilos retries, and anyone holding the
    # secret could replay a hook to spend the org's budget.
    ttl = request.app[CONFIG].cache.search_ttl
    if not await services.cache.add(keys.key("upload", upload.org_id, upload.randtag), b"1", ttl):
        metrics.webhooks.labels("replayed").inc()
        return web.json_response({"accepted": upload.randtag, "refreshing": 0}, status=202, headers=NO_STORE)
    await services.searcher.look_up_duration(upload.org_id, upload.randtag)
    fronted = await services.subscriptions.front(upload.org_id)
    metrics.webhooks.labels("accepted").inc()
    log.info(
        "upload webhook: org=%s randtag=%s, %d subscribed searches to refresh",
        org_id,
        upload.randtag,
        fronted,
    )
    return web.json_response(
        {"accepted": upload.randtag, "refreshing": fronted}, status=202, headers=NO_STORE
    )
