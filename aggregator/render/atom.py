"""The Atom feed (RFC 4287), with Media RSS, OpenSearch 1.1 and RFC 5005 paging links."""

from __future__ import annotations

from aggregator.render.feeds import write_feed
from aggregator.render.presentation import View


async def render_atom(view: View) -> bytes:
    return await write_feed(view, "atom")
