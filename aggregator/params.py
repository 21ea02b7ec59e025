"""The search parameters every format shares, validated (contract: "HTTP surface").

`parse_search_params` turns a hostile query string into `SearchParams` or
raises `ParamError` naming the parameter and the rule it broke, which the web
layer turns into a 400 in the client's format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from urllib.parse import parse_qsl, urlsplit

from multidict import MultiDict

from aggregator.model import Length, Sort
from aggregator.text import xml_safe

MAX_QUERY = 256
MAX_COUNT = 100
DEFAULT_COUNT = 20
MAX_START = 100_000
_SPACE_RE = re.compile(r"\s+")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TOKEN_RE = re.compile(r"\{(?:[A-Za-z][A-Za-z0-9]{0,30}:)?[A-Za-z][A-Za-z0-9]{0,40}\??\}")


class ParamError(ValueError):
    def __init__(self, param: str, rule: str) -> None:
        super().__init__(f"{param}: {rule}")
        self.param = param
        self.rule = rule


@dataclass(frozen=True, slots=True)
class SearchParams:
    q: str  # as typed, whitespace-folded
    count: int
    start_index: int  # 1-based, over the merged list
    sort: Sort
    orgs: tuple[str, ...]  # the orgs to ask, in configuration order
    length: Length | None = None  # the `duration` filter
    after: date | None = None  # published on or after this day (UTC)

    @property
    def normalised_query(self) -> str:
        """What the cache keys on: lower-cased, whitespace folded."""
        return self.q.lower()

    @property
    def start_page(self) -> int:
        return (self.start_index - 1) // self.count + 1


def params_of_url(url: str, visible_orgs: Sequence[str]) -> SearchParams:
    """The search a URL (or a path with its query) names, as if it had been requested; ParamError if none."""
    query = MultiDict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    return parse_search_params(query, visible_orgs)


def parse_search_params(query: Mapping[str, str], visible_orgs: Sequence[str]) -> SearchParams:
    """`visible_orgs`: the org ids this client may see, in configuration order."""
    q = fold(_single(query, "q") or "")
    if not q:
        raise ParamError("q", "is required: the words to search for")
    if len(q) > MAX_QUERY:
        raise ParamError("q", f"must be at most {MAX_QUERY} characters")
    if any(ord(c) < 32 for c in q):
        raise ParamError("q", "must not contain control characters")
    q = xml_safe(q).strip()  # U+FFFE, U+FFFF and the like are dropped, not written into a feed
    if not q:
        raise ParamError("q", "is required: the words to search for")
    count = _integer(query, "count", DEFAULT_COUNT, 1, MAX_COUNT)
    start_index = _integer(query, "startIndex", 0, 1, MAX_START)
    if not start_index:
        page = _integer(query, "startPage", 1, 1, MAX_START)
        start_index = (page - 1) * count + 1
        if start_index > MAX_START:
            raise ParamError("startPage", f"must not reach past result {MAX_START}")
    try:
        sort = Sort(_single(query, "sort") or Sort.RELEVANCE)
    except ValueError:
        raise ParamError("sort", "must be relevance or date") from None
    orgs = tuple(visible_orgs)
    raw_orgs = _single(query, "org")
    if raw_orgs is not None and raw_orgs.strip():
        wanted = {o.strip() for o in raw_orgs.split(",") if o.strip()}
        if not wanted:  # `org=,`: a list of nothing would search nothing
            raise ParamError("org", "must be a comma-separated list of known organisation ids")
        unknown = wanted - set(visible_orgs)
        if unknown:
            raise ParamError("org", "must be a comma-separated list of known organisation ids")
        orgs = tuple(o for o in visible_orgs if o in wanted)
    length = None
    raw_length = _single(query, "duration")
    if raw_length:
        try:
            length = Length(raw_length.strip())
        except ValueError:
            raise ParamError(
                "duration", "must be short (under 4 min), medium (4-20 min) or long (over 20 min)"
            ) from None
    after = None
    raw_after = _single(query, "after")
    if raw_after:
        if not _DATE_RE.fullmatch(raw_after.strip()):
            raise ParamError("after", "must be a date, YYYY-MM-DD")
        try:
            after = date.fromisoformat(raw_after.strip())
        except ValueError:
            raise ParamError("after", "must be a date, YYYY-MM-DD") from None
    return SearchParams(q, count, start_index, sort, orgs, length, after)


def fold(text: str) -> str:
    return _SPACE_RE.sub(" ", text).strip()


def _single(query: Mapping[str, str], name: str) -> str | None:
    """The parameter's one value; an unsubstituted OpenSearch token counts as absent."""
    getall = getattr(query, "getall", None)
    if getall is not None:
        values = [v for v in getall(name, []) if not is_template_token(v)]
        if len(values) > 1:
            raise ParamError(name, "must be given once")
        return values[0] if values else None
    value = query.get(name)
    return None if value is None or is_template_token(value) else value


def is_template_token(value: str) -> bool:
    """`{count}`, `{startIndex?}`, `{opensearch:itemsPerPage}`: what some clients send unfilled.

    SharePoint and other OpenSearch clients are known to pass a template
    parameter through literally when they have nothing for it.
    """
    return _TOKEN_RE.fullmatch(value.strip()) is not None


def _integer(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = _single(query, name)
    if raw is None or raw == "":
        return default
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not lo <= int(raw) <= hi:
        raise ParamError(name, f"must be a whole number from {lo} to {hi}")
    return int(raw)
