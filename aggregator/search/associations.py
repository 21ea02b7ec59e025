"""Which words go together, over a sample of the videos every replica has seen: what a query is
about beyond the words typed.

A query's own words miss most videos about its subject: a lecture on heat engines may never say
"thermodynamics" in its title or description. Pseudo-relevance feedback (`rank._feedback`) adds
the words of the query's best first matches, but when an org lists its matches newest first,
those matches are often about something else. Words that occur with the query's words across
many videos are a steadier guide (global analysis: Qiu & Frei 1993, Xu & Croft 1996). A word is
weighed by how often it occurs with a query word in the sample, times how telling it is there
(its idf in the sample); the best `EXPANSION_TERMS` join the query with the feedback terms.

The sample is the terms of the last `SAMPLE_SIZE` videos any replica learned: a list in the cache
(`terms:sample`), read with each term-statistics snapshot (`termstats`) and indexed by term in
turns of the loop. A word's associations, and a query's expansion, are worked out the first time
a query asks for them in a snapshot (a word's from at most `MAX_DOCS_PER_TERM` of the sample's
videos that hold it) and kept with the snapshot: the same snapshot, the same expansion, the same
bytes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

from aggregator.loop.turns import in_turns

SAMPLE_SIZE = 20_000  # videos in the shared sample (a few MB in Redis: their terms only)
# Below this many videos the sample says too little of which words go together to widen a query
# by it (a new service): a few dozen videos would make noise, and a service's first snapshots
# would reorder its pages for nothing.
MIN_SAMPLE = 1_000
MAX_DOCS_PER_TERM = 1_000  # sample videos a word's associations are counted over, at most
EXPANSION_TERMS = 20
EXPANSION_WEIGHT = 0.7  # the weight of the most associated word; a typed word weighs 1
# A snapshot keeps the associations of this many words worked out (it lives a few minutes), each
# word's best `KEPT_PER_WORD`: a few MB at most.
KEPT_WORDS = 1_000
KEPT_PER_WORD = 300
DIGITS = 6
K = TypeVar("K", bound=Hashable)


class Associations:
    """The sample's videos (each its distinct terms), and which of them hold each term."""

    def __init__(self, docs: Sequence[tuple[str, ...]], index: Mapping[str, Sequence[int]]) -> None:
        self._docs = docs
        self._index = index
        self._worked_out: dict[str, dict[str, float]] = {}  # a word's associations
        self._expansions: dict[tuple[str, ...], dict[str, float]] = {}  # a query's

    @classmethod
    def empty(cls) -> Associations:
        return cls((), {})

    @classmethod
    async def of(cls, sample: Sequence[bytes]) -> Associations:
        """Indexed in turns of the loop: 20,000 videos take ~100 ms in all on a slow host."""
        words: dict[str, str] = {}  # one string per word, however many videos hold it
        index: dict[str, list[int]] = {}
        docs: list[tuple[str, ...]] = []

        def add(raw: bytes) -> None:
            doc = tuple(words.setdefault(w, w) for w in raw.decode("utf-8", "replace").split())
            position = len(docs)
            docs.append(doc)
            for word in doc:
                index.setdefault(word, []).append(position)

        await in_turns(sample, add)
        return cls(docs, index)

    def unasked(self) -> Associations:
        """The same sample with no word's associations worked out yet (a bench times the first ask)."""
        return Associations(self._docs, self._index)

    def ready(self, terms: Sequence[str]) -> bool:
        """Whether `expansion(terms)` is at hand (worked out already, or nothing to work out)."""
        return len(self._docs) < MIN_SAMPLE or tuple(terms) in self._expansions

    @property
    def videos(self) -> int:
        return len(self._docs)

    def expansion(self, terms: Sequence[str]) -> Mapping[str, float]:
        """The words that go with `terms` (not themselves), weighted up to `EXPANSION_WEIGHT`."""
        if len(self._docs) < MIN_SAMPLE:
            return {}
        key = tuple(terms)
        found = self._expansions.get(key)
        if found is not None:
            return found
        weight: dict[str, float] = {}
        for term in terms:
            for word, w in self._associated(term).items():
                weight[word] = weight.get(word, 0.0) + w
        for term in terms:
            weight.pop(term, None)
        best = _heaviest(weight, EXPANSION_TERMS)
        found = {}
        if best and weight[best[0]] > 0:
            most = weight[best[0]]
            found = {w: round(EXPANSION_WEIGHT * weight[w] / most, DIGITS) for w in best if weight[w] > 0}
        return _kept(self._expansions, key, found)

    def _associated(self, term: str) -> dict[str, float]:
        """P(word | a sample video holds `term`) times the word's idf in the sample."""
        found = self._worked_out.get(term)
        if found is not None:
            return found
        holding = self._index.get(term, ())[:MAX_DOCS_PER_TERM]
        counts: dict[str, int] = {}
        for position in holding:
            for word in self._docs[position]:
                counts[word] = counts.get(word, 0) + 1
        n = len(self._docs)
        weight = {
            word: c / len(holding) * math.log(n / len(self._index[word]))
            for word, c in counts.items()
            if word != term
        }
        return _kept(self._worked_out, term, {w: weight[w] for w in _heaviest(weight, KEPT_PER_WORD)})


def _heaviest(weight: Mapping[str, float], n: int) -> list[str]:
    """The `n` heaviest words, heaviest first; ties by the word, so the same weights, the same words."""
    return heapq.nsmallest(n, weight, key=lambda w: (-weight[w], w))


def _kept(worked_out: dict[K, dict[str, float]], key: K, found: dict[str, float]) -> dict[str, float]:
    """`found`, kept under `key` with the snapshot; a full store starts again (it lives minutes)."""
    if len(worked_out) >= KEPT_WORDS:
        worked_out.clear()
    worked_out[key] = found
    return found
