"""Turning one organisation's search answer into `Video`s.

ilos never documented the body of `GET /opensearch/`; see
shared/reference/ilos-upstream.md for the evidence this follows. Answers may be
RSS 2.0 (the observed shape, with non-namespaced `randtag`, `embedLink`,
`duration`, `plays` and `author` children) or Atom; feedparser reads both.

feedparser costs about half a millisecond per item, so `parse_search_answer`,
the one entry point, runs in a worker process or thread (parsepool), never on
the event loop; no other pass over upstream bytes exists.

For the one shape ilos is known to send (RSS 2.0 with the children listed in
`_RSS_CHILDREN`), `_rss_entries` reads the document with lxml some twenty
times faster and builds the same entry mapping feedparser would; every entry,
however it was read, goes through `_video_from_entry`. It gives up, and
feedparser reads the document, at anything it does not handle exactly as
feedparser does: another format, an unknown element, a title that might be
HTML, a date or author it would have to guess at, XML that is not
well-formed. tests/test_parsing.py checks the two against each other.
"""

from __future__ import annotations

import calendar
import html
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import feedparser
import nh3
from lxml import etree

from aggregator.model import RANDTAG_RE, Video, sane_duration
from aggregator.text import xml_safe

_VIEW_RE = re.compile(r"/(?:view|embed)/([A-Za-z0-9_-]{4,64})(?:[/?#]|$)")
_TITLE_PREFIX_RE = re.compile(r"^\s*(?:ilos|vidgrid)\s*:\s*", re.IGNORECASE)
# Every repetition over upstream text is bounded, so no regex here can backtrack
# quadratically however the text is made (the pre-scan that could is gone).
_BLOCK_TAG_RE = re.compile(r"<\s{0,8}(?:br|/p|/div|/li|/h\d|/tr)\b[^<>]{0,256}>", re.IGNORECASE)
_IMG_SRC_RE = re.compile(
    r"<img\b[^<>]{0,1024}?\bsrc\s{0,8}=\s{0,8}[\"']([^\"'<>]{1,2048})[\"']", re.IGNORECASE
)
_SPACE_RE = re.compile(r"\s+")

FEEDPARSER_MAX_BYTES = 2 * 1024 * 1024
MAX_TITLE = 300
MAX_SUMMARY = 600
MAX_AUTHOR = 120
# A plain integer duration above ten hours in seconds is read as milliseconds:
# ilos hosts lectures, not ten-hour streams, and 36,000 ms is a 36-second clip.
_SECONDS_CEILING = 36_000


class UnparseableAnswer(Exception):
    """The body is not an RSS or Atom document. Carries no body text: it may echo a key."""


def parse_search_answer(body: bytes, max_items: int | None = None) -> list[Video]:
    """Parse a search answer; items without a usable randtag or view link are skipped.

    At most `max_items` videos come back (upstream.max_items): the rest are never
    built, nor sent back from the worker, nor unpickled on the event loop's side.
    """
    entries = _rss_entries(body)
    if entries is None:
        entries = feedparser_entries(body)
    videos: list[Video] = []
    seen: set[str] = set()
    for entry in entries:
        video = _video_from_entry(entry)
        if video is not None and video.randtag not in seen:
            seen.add(video.randtag)
            videos.append(video)
            if max_items is not None and len(videos) >= max_items:
                break
    return videos


def feedparser_entries(body: bytes) -> list[Any]:
    if len(body) > FEEDPARSER_MAX_BYTES:
        # feedparser is linear but slow (about 3 s a megabyte of junk): past this, an answer
        # that is not the evidenced shape would hold a parse worker for longer than any search waits.
        raise UnparseableAnswer("too large for the general parser")
    doc = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    if not doc.get("version"):
        raise UnparseableAnswer("not an RSS or Atom document")
    entries: list[Any] = doc.entries
    return entries


MEDIA_NS = "http://search.yahoo.com/mrss/"
# Item children read exactly as feedparser reads them (text, or media attributes).
_RSS_TEXT_CHILDREN = {
    "title",
    "link",
    "description",
    "pubDate",
    "author",
    "guid",
    "randtag",
    "embedLink",
    "duration",
    "plays",
    "video_id",
    "pubDateDiffForHuman",
}
_RSS_MEDIA_CHILDREN = {f"{{{MEDIA_NS}}}thumbnail", f"{{{MEDIA_NS}}}content"}
_RSS_CHILDREN = _RSS_TEXT_CHILDREN | _RSS_MEDIA_CHILDREN
_LOOKS_LIKE_HTML_RE = re.compile(r"</\w+>|&#?\w+;")
_XML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True, remove_pis=True
)


def _rss_entries(body: bytes) -> list[dict[str, Any]] | None:
    """feedparser-shaped entries for the evidenced RSS shape, or None to let feedparser read it."""
    try:
        root = etree.fromstring(body, _XML_PARSER)
    except (etree.XMLSyntaxError, ValueError):
        return None
    if root.tag != "rss" or root.get("version") != "2.0":
        return None
    if body.lstrip()[:9].lower().startswith(b"<!doctype") or b"<!DOCTYPE" in body[:512]:
        return None  # entity declarations: feedparser's business
    entries = []
    channel = root.find("channel")
    if channel is None:
        return None
    for item in channel.iterfind("item"):
        entry: dict[str, Any] = {}
        for child in item:
            tag = child.tag
            if tag not in _RSS_CHILDREN or (len(child) and tag in _RSS_TEXT_CHILDREN):
                return None
            if tag in _RSS_MEDIA_CHILDREN:
                key = "media_thumbnail" if tag.endswith("thumbnail") else "media_content"
                entry.setdefault(key, []).append(dict(child.attrib))
                continue
            if tag in entry or tag.lower() in entry:
                return None  # a repeated element: which one feedparser keeps is its business
            text = child.text or ""
            if tag == "title":
                if _LOOKS_LIKE_HTML_RE.search(text):
                    return None
                entry["title"] = text
                entry["title_detail"] = {"type": "text/plain"}
            elif tag == "link":
                entry["link"] = text.strip()
            elif tag == "description":
                # feedparser re-serialises this HTML; only its plain text is used,
                # and that is the same either way (checked in the tests).
                entry["summary"] = text
            elif tag == "pubDate":
                try:
                    when = parsedate_to_datetime(text.strip())
                except (TypeError, ValueError, IndexError):
                    return None
                if when.tzinfo is None:
                    return None
                entry["published_parsed"] = when.utctimetuple()
            elif tag == "author":
                if "@" in text or "(" in text:
                    return None  # feedparser splits e-mail addresses from names
                entry["author"] = text
            elif tag == "guid":
                entry["id"] = text.strip()
            else:
                entry[tag.lower()] = text
        entries.append(entry)
    return entries


def parse_duration_text(text: str | None) -> int | None:
    """A feed's duration in milliseconds, or None when it does not parse or is absurd.

    Accepts `H:MM:SS`, `MM:SS` (optionally with fractional seconds), ISO 8601
    `PT#H#M#S`, `123ms`, and plain numbers: seconds, or milliseconds when the
    number is too large to be seconds of a lecture (see `_SECONDS_CEILING`).
    Negative, over seven days, or longer than 32 characters: unknown.
    """
    return sane_duration(_duration_text(text))


def _duration_text(text: str | None) -> float | None:
    if text is None:
        return None
    s = text.strip().lower()
    if not s or len(s) > 32:
        return None
    if ":" in s:
        parts = s.split(":")
        if len(parts) > 3 or not all(re.fullmatch(r"\d+(?:\.\d+)?", p) for p in parts):
            return None
        if any("." in p for p in parts[:-1]):
            return None
        values = [float(p) for p in parts]
        if any(v >= 60 for v in values[1:]):
            return None
        seconds = 0.0
        for v in values:
            seconds = seconds * 60 + v
        return round(seconds * 1000)
    m = re.fullmatch(r"p?t?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", s)
    if m and s.startswith("pt") and any(m.groups()):
        h, mi, sec = (float(g) if g else 0.0 for g in m.groups())
        return round((h * 3600 + mi * 60 + sec) * 1000)
    m = re.fullmatch(r"(\d+)\s*ms", s)
    if m:
        return int(m.group(1))
    m = re.fullmatch(r"\d+(?:\.\d+)?", s)
    if m:
        value = float(s)
        if "." not in s and value > _SECONDS_CEILING:
            return int(value)
        return round(value * 1000)
    return None


def plain_text(markup: str | None, limit: int = MAX_SUMMARY) -> str:
    """Upstream HTML as one line of plain text: tags and scripts gone, entities decoded."""
    if not markup:
        return ""
    # Only the first part can show: read no more of a huge field than could.
    spaced = _BLOCK_TAG_RE.sub(" ", markup[: limit * 64])
    text = html.unescape(nh3.clean(spaced, tags=set()))
    text = xml_safe(_SPACE_RE.sub(" ", text)).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def strip_title_prefix(title: str) -> str:
    """`ilos: Intro` and `VidGrid: Intro` (the `ptilos` option) become `Intro`."""
    return _TITLE_PREFIX_RE.sub("", title, count=1)


def _video_from_entry(entry: Any) -> Video | None:
    link = _http_url(entry.get("link"))
    randtag = _randtag(entry, link)
    if randtag is None or link is None:
        return None
    title_detail = entry.get("title_detail") or {}
    raw_title = entry.get("title") or ""
    if "html" in (title_detail.get("type") or ""):
        title = plain_text(raw_title, MAX_TITLE)
    else:
        title = xml_safe(_SPACE_RE.sub(" ", raw_title[: MAX_TITLE * 4])).strip()[:MAX_TITLE]
    title = strip_title_prefix(title) or randtag
    summary_html = entry.get("summary") or ""
    return Video(
        randtag=randtag,
        title=title,
        link=link,
        embed_url=_embed_url(entry, link),
        summary=plain_text(summary_html),
        published=_published(entry),
        author=plain_text(entry.get("author"), MAX_AUTHOR) or None,
        thumbnail_url=_thumbnail(entry, summary_html),
        plays=_plays(entry.get("plays")),
        duration_ms=_feed_duration(entry),
    )


def _http_url(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    url: str = value.strip()
    if len(url) > 2048 or any(c <= " " for c in url) or xml_safe(url) != url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2048:
        return None
    return url


def _randtag(entry: Any, link: str | None) -> str | None:
    explicit = entry.get("randtag")
    if isinstance(explicit, str) and RANDTAG_RE.fullmatch(explicit.strip()):
        return explicit.strip()
    for candidate in (link, entry.get("id")):
        if isinstance(candidate, str):
            m = _VIEW_RE.search(urlsplit(candidate).path if "://" in candidate else candidate)
            if m:
                return m.group(1)
    guid = entry.get("id")
    if isinstance(guid, str):
        last = guid.strip().rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        if RANDTAG_RE.fullmatch(last):
            return last
    return None


def _embed_url(entry: Any, link: str) -> str:
    explicit = _http_url(entry.get("embedlink"))
    if explicit:
        return explicit
    parts = urlsplit(link)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.replace("/view/", "/embed/", 1), "", ""))


def _published(entry: Any) -> datetime | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if not parsed:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(parsed), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _thumbnail(entry: Any, summary_html: str) -> str | None:
    for thumb in entry.get("media_thumbnail") or ():
        url = _http_url(thumb.get("url"))
        if url:
            return url
    for content in entry.get("media_content") or ():
        if content.get("medium") == "image" or str(content.get("type", "")).startswith("image/"):
            url = _http_url(content.get("url"))
            if url:
                return url
    m = _IMG_SRC_RE.search(summary_html[:65_536])
    return _http_url(html.unescape(m.group(1))) if m else None


def _plays(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 12:
        return int(value.strip())
    return None


def _feed_duration(entry: Any) -> int | None:
    for key in ("duration", "itunes_duration"):
        value = entry.get(key)
        if isinstance(value, str):
            ms = parse_duration_text(value)
            if ms is not None:
                return ms
    for content in entry.get("media_content") or ():
        value = content.get("duration")
        if isinstance(value, str) and len(value) <= 32 and re.fullmatch(r"\d+(?:\.\d+)?", value.strip()):
            return sane_duration(float(value) * 1000)  # Media RSS: seconds
    return None
