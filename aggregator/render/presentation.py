"""What every format says about a page of results, written once.

Atom, RSS, JSON Feed and the HTML page all render a `View`, so an entry has
the same id, summary text, thumbnail URL and paging links in every format
(contract: "What every result carries"). A View knows where each format is
served through `formats`, the registry in `aggregator.render.formats`, seen here
only as `FormatInfo` so that the renderers need not import the registry that
lists them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from aggregator.model import EPOCH, Length, OrgReport, OrgStatus, Result, Sort, format_duration
from aggregator.params import DEFAULT_COUNT
from aggregator.render.links import signed_link
from aggregator.render.paging import Facets, Page, search_query

# What makes an org's results missing from an answer, as every format says at feed level.
MISSING = frozenset({OrgStatus.TIMEOUT, OrgStatus.ERROR, OrgStatus.SKIPPED, OrgStatus.DENIED})
LENGTH_WORDS = {
    Length.SHORT: "under 4 minutes",
    Length.MEDIUM: "4 to 20 minutes",
    Length.LONG: "over 20 minutes",
}


class FormatInfo(Protocol):
    """What a renderer may know about a format: where it is and what it is called."""

    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def media_type(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def subscribable(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class View:
    page: Page
    base_url: str  # public_url, no trailing slash
    org_names: Mapping[str, str]  # id -> name, for every configured org
    all_orgs: tuple[str, ...]  # the orgs this client may see (an `org` param naming all is dropped)
    formats: Mapping[str, FormatInfo]  # by name: every format the service answers in
    short_name: str = "ilos videos"  # the service's OpenSearch ShortName
    language: str = "en"  # [description] language: every format says it
    reports: tuple[OrgReport, ...] = ()  # what each org did for this answer
    variant: str = ""  # "embed": the compact page for iframes
    thumbnail_query: str = ""  # the caller's signed thumbnail scope (thumbnails.scope_query)
    unknown_length_left_out: int = 0  # a `duration` filter's videos whose length is not known yet
    first_seen: datetime = EPOCH  # when this page first appeared: the date of a page with no dated entry
    extra: tuple[tuple[str, str], ...] = ()  # carried into every link (a feed reader's key=)
    hub: str | None = None  # a WebSub hub, named by open feeds only (never beside a key=)
    facets: Facets | None = None  # the page's refine counts (the HTML page only)
    link_key: bytes | None = None  # the compact page's: results also carry a signed link on our host

    def url(self, fmt: str, start_index: int | None = None) -> str:
        query = search_query(
            self.page.params, start_index=start_index, all_orgs=self.all_orgs, extra=self.extra
        )
        return f"{self.base_url}{self.formats[fmt].path}?{query}"

    def subscription_url(self, fmt: str) -> str:
        """What to subscribe to: newest first, 20 items, from the start, exactly the URL that feed's
        own `rel="self"` carries (with the caller's `key=`), so a reader that follows `self` keeps it.

        A subscription that followed relevance would never see a new video that ranks 21st.
        """
        params = replace(self.page.params, sort=Sort.DATE, count=DEFAULT_COUNT, start_index=1)
        query = search_query(params, all_orgs=self.all_orgs, extra=self.extra)
        return f"{self.base_url}{self.formats[fmt].path}?{query}"

    def refine_url(self, **changes: object) -> str:
        """The search page with some filters changed (`length`, `after`, `orgs`), from its first result."""
        params = replace(self.page.params, start_index=1, **changes)  # type: ignore[arg-type]
        query = search_query(params, all_orgs=self.all_orgs, extra=self.extra)
        return f"{self.base_url}{self.formats['html'].path}?{query}"

    def names_of(self, org_ids: tuple[str, ...]) -> str:
        return ", ".join(self.org_names.get(o, o) for o in org_ids)

    @property
    def length_words(self) -> Mapping[Length, str]:
        return LENGTH_WORDS

    def paging_links(self, fmt: str) -> dict[str, str]:
        """RFC 5005 section 3: first, previous, next and last, where they apply."""
        page = self.page
        links = {"first": self.url(fmt, page.first_index)}
        if page.previous_index is not None:
            links["previous"] = self.url(fmt, page.previous_index)
        if page.next_index is not None:
            links["next"] = self.url(fmt, page.next_index)
        links["last"] = self.url(fmt, page.last_index)
        return links

    @property
    def feeds(self) -> list[FormatInfo]:
        """The formats people subscribe to, in registry order."""
        return [f for f in self.formats.values() if f.subscribable]

    @property
    def description_url(self) -> str:
        return f"{self.base_url}{self.formats['description'].path}"

    @property
    def feed_id(self) -> str:
        """Stable per saved search (query, orgs, sort), whatever the page or host."""
        p = self.page.params
        basis = "\n".join((p.normalised_query, ",".join(p.orgs), p.sort))
        return "urn:ilos:search:" + hashlib.sha256(basis.encode()).hexdigest()[:24]

    @property
    def title(self) -> str:
        return f"Videos for “{self.page.params.q}”"

    @property
    def subtitle(self) -> str:
        p = self.page.params
        names = [self.org_names.get(o, o) for o in p.orgs]
        text = f"ilos videos matching “{p.q}” in {', '.join(names)}"
        if p.length is not None:
            text += f", {LENGTH_WORDS[p.length]}"
        if p.after is not None:
            text += f", published on or after {p.after.isoformat()}"
        if self.unknown_length_left_out:
            n = self.unknown_length_left_out
            text += f" ({n} video{'s' if n != 1 else ''} of unknown length left out)"
        missing = [name for _, name, _ in self.missing]
        if missing:
            who = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
            text += f". {who} did not answer; {'its' if len(missing) == 1 else 'their'} results are missing"
        return text

    @property
    def missing(self) -> list[tuple[str, str, str]]:
        """(org id, name, status) of each org whose results are missing from this answer (timeout,
        error, skipped, denied). Not a stale one: its results are there, and staleness comes and
        goes too often for a feed's text."""
        return [
            (r.org_id, self.org_names.get(r.org_id, r.org_id), str(r.status))
            for r in self.reports
            if r.status in MISSING
        ]

    @property
    def uses_first_seen(self) -> bool:
        """Whether the page's bytes carry `first_seen`: no entries, or an entry without a date."""
        return not self.page.results or not all(r.video.published for r in self.page.results)

    @property
    def updated(self) -> datetime:
        """The newest entry's time, never "now": the same results give the same bytes.

        A page without dated entries (an empty result, say) says when it first appeared.
        """
        times = [r.video.published for r in self.page.results if r.video.published]
        return max(times, default=self.first_seen)

    @property
    def troubled(self) -> list[tuple[str, str]]:
        """(org name, status) of each org whose results are missing or not fresh."""
        return [(self.org_names.get(r.org_id, r.org_id), r.status) for r in self.reports if not r.status.good]

    def thumbnail_url(self, result: Result) -> str | None:
        """Ours, not upstream's: upstream signs and expires its URLs on every answer."""
        if not result.video.thumbnail_url:
            return None
        return f"{self.base_url}/thumbnails/{result.video.randtag}{self.thumbnail_query}"

    def host_link(self, result: Result) -> str | None:
        """The result's link through this host (`links.signed_link`), for a frame WordPress
        sandboxes; None on pages that are not framed."""
        if self.link_key is None:
            return None
        return signed_link(self.base_url, self.link_key, result.video.link)

    def org_labels(self, result: Result) -> list[str]:
        return [self.org_names.get(o, o) for o in result.orgs]

    def summary(self, result: Result) -> str:
        """Plain text, short enough for SharePoint: duration first, then who and where."""
        v = result.video
        parts = []
        if v.duration_ms is not None:
            parts.append(f"Duration {format_duration(v.duration_ms)}")
        if v.author:
            parts.append(f"by {v.author}")
        parts.append(", ".join(self.org_labels(result)))
        head = " · ".join(parts)
        return f"{head}. {v.summary}" if v.summary else head
