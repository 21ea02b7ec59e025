"""Search suggestions (OpenSearch Suggestions 1.1): `[prefix, [completions...]]`.

Answered from memory, never from upstream: the titles of videos this process
has seen in org answers and the queries that found something, each remembered
with the orgs it came from, so a client is only offered what it may see.
Bounded: the least recently seen phrases go first.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable

MAX_PHRASES = 5_000  # a linear scan per keystroke stays around a millisecond
MAX_SUGGESTIONS = 10
_SPACE_RE = re.compile(r"\s+")


class SuggestionIndex:
    def __init__(self, max_phrases: int = MAX_PHRASES) -> None:
        self.max_phrases = max_phrases
        # folded phrase -> (phrase as first seen, org ids, times seen)
        self._phrases: OrderedDict[str, tuple[str, frozenset[str], int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._phrases)

    def add(self, phrase: str, orgs: Iterable[str]) -> None:
        phrase = _SPACE_RE.sub(" ", phrase).strip()[:120]
        if len(phrase) < 2:
            return
        folded = phrase.casefold()
        known = self._phrases.pop(folded, None)
        if known is None:
            self._phrases[folded] = (phrase, frozenset(orgs), 1)
        else:
            self._phrases[folded] = (known[0], known[1] | frozenset(orgs), known[2] + 1)
        while len(self._phrases) > self.max_phrases:
            self._phrases.popitem(last=False)

    def suggest(self, prefix: str, visible: Iterable[str], limit: int = MAX_SUGGESTIONS) -> list[str]:
        """Phrases starting with `prefix` (or with a word that does), most seen first."""
        folded = _SPACE_RE.sub(" ", prefix).strip().casefold()
        if not folded:
            return []
        allowed = frozenset(visible)
        starts, inside = [], []
        for key, (phrase, orgs, seen) in self._phrases.items():
            if not orgs & allowed:
                continue
            if key.startswith(folded):
                starts.append((-seen, key, phrase))
            elif f" {folded}" in key:
                inside.append((-seen, key, phrase))
        ranked = sorted(starts)[:limit] + sorted(inside)[:limit]
        return [phrase for _, _, phrase in ranked][:limit]
