"""JSON Feed 1.1 (https://jsonfeed.org/version/1.1/), with an `_ilos` extension per item.

JSON Feed lets publishers add objects whose keys start with an underscore;
`_ilos` carries what has no standard field (randtag, duration in
milliseconds, orgs, embed URL) and the top-level `_opensearch` the paging
figures the XML feeds carry as OpenSearch elements.
"""

from __future__ import annotations

import functools
import json

from aggregator.loop.turns import in_turns
from aggregator.model import Result, Sort, duration_seconds
from aggregator.render.presentation import View


async def render_json_feed(view: View) -> bytes:
    page = view.page
    feed: dict[str, object] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": view.title,
        "description": view.subtitle,
        "home_page_url": view.url("html"),
        "feed_url": view.url("json"),
        "icon": f"{view.base_url}/icon-64.png",
        "favicon": f"{view.base_url}/icon-16.png",
        "language": view.language,
    }
    if view.hub:  # JSON Feed 1.1 "hubs": the topic is feed_url
        feed["hubs"] = [{"type": "WebSub", "url": view.hub}]
    links = view.paging_links("json")
    if "next" in links:
        feed["next_url"] = links["next"]
    if page.params.length is not None or page.params.after is not None:
        feed["_ilos"] = {
            "duration": page.params.length,
            "after": page.params.after.isoformat() if page.params.after else None,
            "unknown_length_left_out": view.unknown_length_left_out,
        }
    if view.missing:  # absent when every org answered: a healthy answer's bytes stay as they were
        ilos = feed.setdefault("_ilos", {})
        assert isinstance(ilos, dict)
        ilos["missing"] = [{"org": org, "name": name, "status": status} for org, name, status in view.missing]
    feed["_opensearch"] = {
        "about": "https://github.com/dewitt/opensearch",
        "totalResults": page.total,
        "startIndex": page.params.start_index,
        "itemsPerPage": page.params.count,
        "searchTerms": page.params.q,
        "links": links,
        "description_url": view.description_url,
    }
    feed["items"] = await in_turns(page.results, functools.partial(_item, view))
    # Compact: with `indent`, the json module leaves its C encoder for a Python one, 5x slower.
    return json.dumps(feed, ensure_ascii=False, separators=(",", ":")).encode()


def _item(view: View, result: Result) -> dict[str, object]:
    v = result.video
    summary = view.summary(result)
    item: dict[str, object] = {
        "id": v.entry_id,
        "url": v.link,
        "title": v.title,
        "summary": summary,
        "content_text": summary,  # 1.1 requires content_text or content_html
    }
    if v.published:
        item["date_published"] = v.published.isoformat().replace("+00:00", "Z")
    thumb = view.thumbnail_url(result)
    if thumb:
        item["image"] = thumb
    if v.author:
        item["authors"] = [{"name": v.author}]
        item["author"] = {"name": v.author}  # JSON Feed 1.0's, which 1.1 allows beside: 1.0 readers
    item["tags"] = view.org_labels(result)
    # The video as JSON Feed 1.1 sees a media file: its embed page, with its length in seconds.
    attachment: dict[str, object] = {"url": v.embed_url, "mime_type": "text/html", "title": v.title}
    if v.duration_ms is not None:
        attachment["duration_in_seconds"] = duration_seconds(v.duration_ms)
    item["attachments"] = [attachment]
    ilos: dict[str, object] = {
        "about": f"{view.base_url}/opensearch.xml",
        "randtag": v.randtag,
        "duration_ms": v.duration_ms,
        "orgs": list(result.orgs),
        "embed_url": v.embed_url,
    }
    if view.page.params.sort is Sort.RELEVANCE:
        # Why it stands where it does: its score, its place in each org's own answer, and which
        # fields hold a word of the query (search.rank). Absent from newest-first feeds.
        ilos.update(score=result.score, rank_in_org=dict(result.rank_in_org), matched=list(result.matched))
    item["_ilos"] = ilos
    return item
