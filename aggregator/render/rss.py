"""The RSS 2.0 feed, for SharePoint result sources and Windows federated search.

Same entries as Atom: `guid isPermaLink="false"` is the Atom id, `description`
is plain text with the duration (SharePoint shows no HTML), `media:thumbnail`
is what Windows shows beside a result, and the channel carries the OpenSearch
response elements and `atom:link`s for self, search and paging.
"""

from __future__ import annotations

from aggregator.render.feeds import write_feed
from aggregator.render.presentation import View


async def render_rss(view: View) -> bytes:
    return await write_feed(view, "rss")
