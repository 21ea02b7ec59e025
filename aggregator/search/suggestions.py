"""Search suggestions (OpenSearch Suggestions 1.1): `[prefix, [completions...]]`.

Answered from memory, never from upstream, and never telling one person what
another typed (contract: "Suggestions offer video titles the caller may
see, and past queries only once `suggest.min_query_count` different callers
have made them"):

- titles of videos this process has seen in org answers, each remembered
  with the orgs it came from, offered only to callers who see one of them;
- past queries that found something, offered only once that many distinct
  callers (a client's name, or a digest of an anonymous caller's address)
  have made them, and forgotten `suggest.retention` days after the last.

A title and a past query of the same text are two entries: a query never
inherits a title's orgs or its exemption from the caller count (else one search
in upper case would tell a limited client whether an exact title exists in an
org it cannot see, and then show it to every client of its scope).

Bounded: the least recently seen phrases go first.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple

from aggregator.model import Clock

MAX_PHRASES = 5_000  # a linear scan per keystroke stays around a millisecond
MAX_SUGGESTIONS = 10
TITLE, QUERY = "t", "q"  # the first character of a phrase's key
_SPACE_RE = re.compile(r"\s+")


class _Phrase(NamedTuple):
    """One phrase. The index keeps it as a plain tuple of plain values (`tuple(phrase)`).

    Full collections walk every container the collector tracks: 5,000 phrases as
    objects with a set and a frozenset each were 15,000 of them, as many as 400
    open connections hold (docs/benchmarks.md, soak). A plain tuple of strings
    and numbers is untracked by the first collection that sees it; a NamedTuple
    instance, like any tuple subclass, never is (CPython's gcmodule.c,
    `untrack_tuples`).
    """

    text: str  # as first seen
    orgs: int  # bit i set: seen in the answer of the org numbered i (SuggestionIndex._mask)
    seen: int = 0
    callers: tuple[str, ...] = ()  # queries only: who made it (at most min_callers kept)
    last: float = 0.0  # queries only: epoch seconds it was last made
    title: bool = False  # a video's title: no caller count needed


class SuggestionIndex:
    def __init__(
        self,
        max_phrases: int = MAX_PHRASES,
        min_callers: int = 3,
        retention_days: float = 30,
        clock: Clock = time.time,
    ) -> None:
        self.max_phrases = max_phrases
        self.min_callers = min_callers
        self.retention = retention_days * 86_400
        self.clock = clock
        # "t" or "q", then the folded text -> tuple(_Phrase): a title and a query never share an entry
        self._phrases: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._org_bits: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._phrases)

    def add_title(self, title: str, orgs: Iterable[str]) -> None:
        touched = self._touch(TITLE, title, orgs)
        if touched is not None:
            key, phrase = touched
            self._keep(key, phrase._replace(title=True))

    def add_query(self, query: str, orgs: Iterable[str], caller: str) -> None:
        touched = self._touch(QUERY, query, orgs)
        if touched is not None:
            key, phrase = touched
            callers = phrase.callers
            if len(callers) < self.min_callers and caller not in callers:
                callers = (*callers, caller)
            self._keep(key, phrase._replace(callers=callers, last=self.clock()))

    def suggest(self, prefix: str, visible: Iterable[str], limit: int = MAX_SUGGESTIONS) -> list[str]:
        """Phrases starting with `prefix` (or with a word that does), most seen first."""
        folded = _SPACE_RE.sub(" ", prefix).strip().casefold()
        if not folded:
            return []
        allowed = self._mask(visible, learn=False)
        forget_before = self.clock() - self.retention
        starts, inside = [], []
        title_text: dict[str, str] = {}
        for key, (text, orgs, seen, callers, last, title) in self._phrases.items():
            if not orgs & allowed:
                continue
            if not title and (len(callers) < self.min_callers or last < forget_before):
                continue  # a past query not yet made by enough callers, or forgotten
            words = key[1:]
            if title:
                title_text[words] = text  # a title's own spelling wins over a query's
            if words.startswith(folded):
                starts.append((-seen, words, text))
            elif f" {folded}" in words:
                inside.append((-seen, words, text))
        ranked = sorted(starts) + sorted(inside)
        offered: dict[str, str] = {}  # a title and a query of the same words are offered once
        for _, words, text in ranked:
            offered.setdefault(words, title_text.get(words, text))
            if len(offered) == limit:
                break
        return list(offered.values())

    def _mask(self, orgs: Iterable[str], learn: bool) -> int:
        """The orgs as bits; `learn` numbers an org seen for the first time (else it sets no bit)."""
        mask = 0
        for org in orgs:
            bit = self._org_bits.get(org)
            if bit is None:
                if not learn:
                    continue
                bit = self._org_bits[org] = 1 << len(self._org_bits)
            mask |= bit
        return mask

    def _touch(self, kind: str, text: str, orgs: Iterable[str]) -> tuple[str, _Phrase] | None:
        """One more sighting of `text` in `orgs`: (key, phrase), taken out for the caller to `_keep`."""
        text = _SPACE_RE.sub(" ", text).strip()[:120]
        if len(text) < 2:
            return None
        folded = kind + text.casefold()
        mask = self._mask(orgs, learn=True)
        stored = self._phrases.pop(folded, None)
        if stored is None:
            phrase = _Phrase(text, mask, seen=1)
        else:
            phrase = _Phrase._make(stored)
            phrase = phrase._replace(orgs=phrase.orgs | mask, seen=phrase.seen + 1)
        return folded, phrase

    def _keep(self, key: str, phrase: _Phrase) -> None:
        """Store `phrase` as the most recently seen; the least recently seen go past the bound."""
        self._phrases[key] = tuple(phrase)
        while len(self._phrases) > self.max_phrases:
            self._phrases.popitem(last=False)
