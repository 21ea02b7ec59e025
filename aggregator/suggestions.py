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

Bounded: the least recently seen phrases go first.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from aggregator.model import Clock

MAX_PHRASES = 5_000  # a linear scan per keystroke stays around a millisecond
MAX_SUGGESTIONS = 10
_SPACE_RE = re.compile(r"\s+")


@dataclass(slots=True)
class _Phrase:
    text: str  # as first seen
    orgs: frozenset[str]
    seen: int = 0
    callers: set[str] = field(default_factory=set)  # queries only: who made it (at most min_callers kept)
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
        self._phrases: OrderedDict[str, _Phrase] = OrderedDict()  # by folded text

    def __len__(self) -> int:
        return len(self._phrases)

    def add_title(self, title: str, orgs: Iterable[str]) -> None:
        phrase = self._touch(title, orgs)
        if phrase is not None:
            phrase.title = True

    def add_query(self, query: str, orgs: Iterable[str], caller: str) -> None:
        phrase = self._touch(query, orgs)
        if phrase is not None:
            if len(phrase.callers) < self.min_callers:
                phrase.callers.add(caller)
            phrase.last = self.clock()

    def suggest(self, prefix: str, visible: Iterable[str], limit: int = MAX_SUGGESTIONS) -> list[str]:
        """Phrases starting with `prefix` (or with a word that does), most seen first."""
        folded = _SPACE_RE.sub(" ", prefix).strip().casefold()
        if not folded:
            return []
        allowed = frozenset(visible)
        forget_before = self.clock() - self.retention
        starts, inside = [], []
        for key, phrase in self._phrases.items():
            if not phrase.orgs & allowed or not self._offerable(phrase, forget_before):
                continue
            if key.startswith(folded):
                starts.append((-phrase.seen, key, phrase.text))
            elif f" {folded}" in key:
                inside.append((-phrase.seen, key, phrase.text))
        ranked = sorted(starts)[:limit] + sorted(inside)[:limit]
        return [text for _, _, text in ranked][:limit]

    def _offerable(self, phrase: _Phrase, forget_before: float) -> bool:
        if phrase.title:
            return True
        return len(phrase.callers) >= self.min_callers and phrase.last >= forget_before

    def _touch(self, text: str, orgs: Iterable[str]) -> _Phrase | None:
        text = _SPACE_RE.sub(" ", text).strip()[:120]
        if len(text) < 2:
            return None
        folded = text.casefold()
        phrase = self._phrases.pop(folded, None)
        if phrase is None:
            phrase = _Phrase(text, frozenset(orgs))
        else:
            phrase.orgs = phrase.orgs | frozenset(orgs)
        phrase.seen += 1
        self._phrases[folded] = phrase
        while len(self._phrases) > self.max_phrases:
            self._phrases.popitem(last=False)
        return phrase
