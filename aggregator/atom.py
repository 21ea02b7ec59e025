"""The Atom feed (RFC 4287), with Media RSS, OpenSearch 1.1 and RFC 5005 paging."""

from __future__ import annotations

from feedgen.feed import FeedGenerator

from aggregator import PRODUCT, __version__
from aggregator.feed_extensions import OpenSearchEntryExtension, OpenSearchExtension
from aggregator.presentation import View
from aggregator.videos import EPOCH, duration_seconds

ATOM_TYPE = "application/atom+xml"
DESCRIPTION_TYPE = "application/opensearchdescription+xml"


def new_feed(view: View, fmt: str, media_type: str) -> FeedGenerator:
    """The feed-level parts Atom and RSS share; `fmt` picks the self and paging URLs."""
    page = view.page
    fg = FeedGenerator()
    fg.load_extension("media", atom=True, rss=True)
    fg.register_extension("opensearch", OpenSearchExtension, OpenSearchEntryExtension)
    fg.id(view.feed_id)
    fg.title(view.title)
    fg.author({"name": PRODUCT})
    fg.generator(PRODUCT, version=__version__)
    fg.updated(view.updated)
    fg.link(href=view.url(fmt), rel="self", type=media_type)
    fg.link(href=view.url("html"), rel="alternate", type="text/html")
    fg.link(href=view.description_url, rel="search", type=DESCRIPTION_TYPE, title=PRODUCT)
    for rel, href in view.paging_links(fmt).items():
        fg.link(href=href, rel=rel, type=media_type)
    fg.opensearch.response(total=page.total, start_index=page.params.start_index,
                           items_per_page=page.params.count, search_terms=page.params.q,
                           count=page.params.count)
    for result in page.results:
        v = result.video
        fe = fg.add_entry(order="append")
        fe.id(v.entry_id)
        fe.title(v.title)
        fe.link(href=v.link, rel="alternate", type="text/html")
        fe.updated(v.published or EPOCH)
        if v.published:
            fe.published(v.published)
        if v.author:
            fe.author({"name": v.author})
        fe.summary(view.summary(result))
        for org_id in result.orgs:
            fe.category(term=org_id, label=view.org_names.get(org_id, org_id))
        media = {"url": v.embed_url, "type": "text/html", "medium": "video", "group": None}
        if v.duration_ms is not None:
            media["duration"] = str(duration_seconds(v.duration_ms))
        fe.media.content(media)
        thumb = view.thumbnail_url(result)
        if thumb:
            fe.media.thumbnail({"url": thumb, "group": None})
    return fg


def render_atom(view: View) -> bytes:
    return new_feed(view, "atom", ATOM_TYPE).atom_str(pretty=True)
