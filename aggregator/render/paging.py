"""One page of the merged results, and the URLs that lead to its neighbours.

Every format pages the same way over the same merged order (OpenSearch 1.1
`startIndex`/`count`, RFC 5005 `first`/`previous`/`next`/`last`), so walking
`next` from any page visits every result exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from urllib.parse import urlencode

from aggregator.model import Length, Result, Sort
from aggregator.params import SearchParams


@dataclass(frozen=True, slots=True)
class Page:
    params: SearchParams
    results: tuple[Result, ...]  # just this page's
    total: int  # the merged count

    @property
    def first_index(self) -> int:
        return 1

    @property
    def previous_index(self) -> int | None:
        start = self.params.start_index
        return max(1, start - self.params.count) if start > 1 else None

    @property
    def next_index(self) -> int | None:
        nxt = self.params.start_index + self.params.count
        return nxt if nxt <= self.total else None

    @property
    def last_index(self) -> int:
        """The start of the last page in this page's own alignment, so `next` reaches it."""
        start, count = self.params.start_index, self.params.count
        if self.total >= start:
            return start + (self.total - start) // count * count
        return max(1, (self.total - 1) // count * count + 1)


def filtered(params: SearchParams, merged: tuple[Result, ...]) -> tuple[tuple[Result, ...], int]:
    """The results the `duration` and `after` filters keep, and how many of unknown length were left out."""
    if params.length is None and params.after is None:
        return merged, 0
    kept: list[Result] = []
    unknown = 0
    since = datetime.combine(params.after, time.min, UTC) if params.after is not None else None
    for r in merged:
        v = r.video
        if since is not None and (v.published is None or v.published < since):
            continue
        if params.length is not None:
            if v.duration_ms is None:
                unknown += 1
                continue
            if Length.of(v.duration_ms) is not params.length:
                continue
        kept.append(r)
    return tuple(kept), unknown


@dataclass(frozen=True, slots=True)
class Facets:
    """Exact counts over the whole merged answer (not one page), for the page's refine links.

    Each facet counts what the other filters keep, as shops do: the length
    counts follow `after` but not `duration`, so every bucket stays reachable;
    the org counts follow both. A video several orgs hold counts for each.
    """

    lengths: tuple[tuple[Length, int], ...]  # every bucket, in order, zeros included
    unknown_length: int
    orgs: tuple[tuple[str, int], ...]  # the orgs asked, in configuration order
    matched: int = 0  # videos that match the query before the length and date filters


def facets(params: SearchParams, merged: tuple[Result, ...]) -> Facets:
    since = datetime.combine(params.after, time.min, UTC) if params.after is not None else None
    by_length = dict.fromkeys(Length, 0)
    unknown = 0
    by_org = dict.fromkeys(params.orgs, 0)
    for r in merged:
        v = r.video
        if since is not None and (v.published is None or v.published < since):
            continue
        length = Length.of(v.duration_ms) if v.duration_ms is not None else None
        if length is None:
            unknown += 1
        else:
            by_length[length] += 1
        if params.length is None or length is params.length:
            for org_id in r.orgs:
                if org_id in by_org:
                    by_org[org_id] += 1
    return Facets(tuple(by_length.items()), unknown, tuple(by_org.items()), len(merged))


def page_of(params: SearchParams, merged: tuple[Result, ...]) -> Page:
    begin = params.start_index - 1
    return Page(params, merged[begin : begin + params.count], len(merged))


def search_query(
    params: SearchParams,
    *,
    start_index: int | None = None,
    all_orgs: tuple[str, ...] = (),
    extra: tuple[tuple[str, str], ...] = (),
) -> str:
    """The query string for these params, in a fixed order so equal searches get equal URLs.

    `org` is left out when it names every org the client may see.
    """
    pairs: list[tuple[str, str]] = [("q", params.q)]
    if params.orgs != all_orgs:
        pairs.append(("org", ",".join(params.orgs)))
    if params.sort is not Sort.RELEVANCE:
        pairs.append(("sort", params.sort))
    if params.length is not None:
        pairs.append(("duration", params.length))
    if params.after is not None:
        pairs.append(("after", params.after.isoformat()))
    pairs.append(("count", str(params.count)))
    pairs.append(("startIndex", str(start_index or params.start_index)))
    pairs.extend(extra)
    return urlencode(pairs)
