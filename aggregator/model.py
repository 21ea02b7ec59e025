"""What the service knows, as plain frozen data; this module imports nothing of ours.

A `Video` is one organisation's view of one ilos video, as parsed from that
organisation's search answer. A `Result` is a video after the merge: every
organisation that returned it, and its rank score. `OrgStatus` is what
happened to one organisation in one search (the contract's `Server-Timing`
descs) and `OrgReport` carries it with its time. Everything is frozen: it is
cached, shared between requests and sent between processes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

ID_PREFIX = "urn:ilos:video:"
# What may be a randtag: 12 letters and digits in every public example; looser, to be safe.
RANDTAG_RE = re.compile(r"[A-Za-z0-9_-]{4,64}")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# A duration past this is absurd for a video, and treated as unknown (contract: "Hostile clients and answers").
MAX_DURATION_MS = 7 * 86_400 * 1000


def sane_duration(ms: float | None) -> int | None:
    """Milliseconds as a whole number, or None for what cannot be a video's length (negative, over 7 days, NaN)."""
    if ms is None or not 0 <= ms <= MAX_DURATION_MS:  # NaN fails both comparisons
        return None
    return round(ms)


# Wall-clock time in epoch seconds. Everything that decides an expiry reads one
# of these, so tests move time forward instead of sleeping it out.
Clock = Callable[[], float]


class OrgStatus(StrEnum):
    """What one org contributed to one answer (contract: "Behaviour under load")."""

    OK = "ok"  # asked now, and it answered
    CACHED = "cached"  # its fresh answer was in the cache
    STALE = "stale"  # its last good answer, because asking failed or is under way
    TIMEOUT = "timeout"
    ERROR = "error"
    SKIPPED = "skipped"  # not asked: cooling down after a 429 or repeated failures
    DENIED = "denied"  # 401/403: the org key was refused

    @property
    def good(self) -> bool:
        """A fresh answer: nothing about this org needs saying to the user."""
        return self in (OrgStatus.OK, OrgStatus.CACHED)

    @classmethod
    def parse(cls, raw: str | bytes) -> OrgStatus:
        """A status read back from a shared store; anything unknown counts as an error."""
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
        try:
            return cls(text)
        except ValueError:
            return cls.ERROR


class Length(StrEnum):
    """The length buckets people know from video sites (contract: "Filters")."""

    SHORT = "short"  # under 4 minutes
    MEDIUM = "medium"  # 4 to 20 minutes
    LONG = "long"  # over 20 minutes

    @classmethod
    def of(cls, duration_ms: int) -> Length:
        if duration_ms < 4 * 60_000:
            return cls.SHORT
        return cls.MEDIUM if duration_ms <= 20 * 60_000 else cls.LONG


class Sort(StrEnum):
    RELEVANCE = "relevance"
    DATE = "date"


@dataclass(frozen=True, slots=True)
class Video:
    randtag: str
    title: str
    link: str  # the view URL people open
    embed_url: str
    summary: str = ""  # plain text, never HTML
    published: datetime | None = None  # always UTC
    author: str | None = None
    thumbnail_url: str | None = None  # upstream's signed URL: never published as is
    plays: int | None = None
    duration_ms: int | None = None
    # Unknown for now, but being looked up: the page says "length pending".
    duration_pending: bool = False
    # The terms of its title, summary and author (`terms.Terms`), space-separated, made where the
    # answer is parsed: what relevance ranking compares the query with.
    terms: tuple[str, str, str] = ("", "", "")

    @property
    def entry_id(self) -> str:
        """The identity in every format: from the randtag alone (never host, key or title)."""
        return ID_PREFIX + self.randtag

    def with_duration(self, duration_ms: int | None) -> Video:
        return self if duration_ms is None else replace(self, duration_ms=duration_ms)

    def to_line(self) -> bytes:
        """One JSON line: how a video crosses from a parse worker and is stored in an answer."""
        return json.dumps(self.to_json()).encode()

    @classmethod
    def from_line(cls, line: bytes) -> Video:
        """Raises what `json.loads` and `from_json` raise for a line of another shape."""
        return cls.from_json(json.loads(line))

    def to_json(self) -> dict[str, Any]:
        return {
            "randtag": self.randtag,
            "title": self.title,
            "link": self.link,
            "embed_url": self.embed_url,
            "summary": self.summary,
            "published": self.published.isoformat() if self.published else None,
            "author": self.author,
            "thumbnail_url": self.thumbnail_url,
            "plays": self.plays,
            "duration_ms": self.duration_ms,
            "duration_pending": self.duration_pending,
            "terms": list(self.terms),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Video:
        """Raises KeyError, TypeError or ValueError for a record of another shape."""
        published = data.get("published")
        return cls(
            randtag=str(data["randtag"]),
            title=str(data["title"]),
            link=str(data["link"]),
            embed_url=str(data["embed_url"]),
            summary=data.get("summary") or "",
            published=datetime.fromisoformat(published) if published else None,
            author=data.get("author"),
            thumbnail_url=data.get("thumbnail_url"),
            plays=data.get("plays"),
            duration_ms=data.get("duration_ms"),
            duration_pending=bool(data.get("duration_pending", False)),
            terms=_terms_of(data.get("terms")),
        )


def _terms_of(raw: Any) -> tuple[str, str, str]:
    if isinstance(raw, list) and len(raw) == 3 and all(isinstance(t, str) for t in raw):
        return (raw[0], raw[1], raw[2])
    return ("", "", "")


@dataclass(frozen=True, slots=True)
class Result:
    """One merged result: the richest view of a video and every org that returned it."""

    video: Video
    orgs: tuple[str, ...]
    score: float
    rank_in_org: tuple[tuple[str, int], ...] = ()  # (org id, its position in that org's answer)
    matched: tuple[str, ...] = ()  # the fields that hold a query term: title, description, author


@dataclass(frozen=True, slots=True)
class OrgReport:
    """What happened to one org in one search; it becomes the `Server-Timing` metric `org-<id>`."""

    org_id: str
    status: OrgStatus
    elapsed_ms: float
    detail: str = ""  # safe to log and show: never a key or upstream text


def format_duration(duration_ms: int | None) -> str:
    """`m:ss` under an hour, `h:mm:ss` from an hour; '' when unknown.

    Rounded to the nearest second, the same whole seconds as Media RSS `duration`.
    """
    if duration_ms is None:
        return ""
    total = duration_seconds(duration_ms)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes}:{seconds:02d}"


def duration_seconds(duration_ms: int) -> int:
    return (duration_ms + 500) // 1000
