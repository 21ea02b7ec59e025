"""Turning text into the terms ranking compares: the way people type, folded, then stemmed.

NFKC (full-width letters, ligatures), then Unicode case folding (`ß` is `ss`),
then accents dropped (`é` is `e`), then words: runs of letters and digits.
Each word is stemmed by the Snowball stemmer of the service's language
(`[description] language`, a BCP 47 tag; PyStemmer, the C build of Snowball),
so `lectures` and `lecture` are one term; for a language Snowball has no
stemmer for, words stay as they are.

Linear in the text: one pass of NFKC and folding, one regex without
backtracking, one stem per distinct word.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

import Stemmer

MAX_WORD = 40  # longer "words" are junk (hashes, URLs), and a bound on what one stem costs
MAX_STEMS_KEPT = 65_536  # distinct words whose stems are remembered
_WORD_RE = re.compile(r"[^\W_]+")

# BCP 47 primary language subtags -> Snowball's algorithm names.
_SNOWBALL = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "ca": "catalan", "cs": "czech", "da": "danish",
    "nl": "dutch", "en": "english", "eo": "esperanto", "et": "estonian", "fi": "finnish", "fr": "french",
    "de": "german", "el": "greek", "hi": "hindi", "hu": "hungarian", "id": "indonesian", "ga": "irish",
    "it": "italian", "lt": "lithuanian", "ne": "nepali", "no": "norwegian", "nb": "norwegian",
    "nn": "norwegian", "fa": "persian", "pl": "polish", "pt": "portuguese", "ro": "romanian",
    "ru": "russian", "sr": "serbian", "es": "spanish", "sv": "swedish", "ta": "tamil", "tr": "turkish",
    "yi": "yiddish",
}  # fmt: skip


def fold(text: str) -> str:
    """NFKC, case folding, accents dropped: what a person means whatever they typed."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return "".join(c for c in folded if not unicodedata.combining(c))


class Terms:
    """The terms of texts in one language. Cheap to share: one per process and language."""

    def __init__(self, language: str) -> None:
        self.language = language
        algorithm = _SNOWBALL.get(language.split("-", 1)[0].lower())
        # PyStemmer's own cache is off (0): it keeps a list per word, which the garbage
        # collector's full collections walk, and it is slower than stemming when words outnumber it.
        self._stemmer = Stemmer.Stemmer(algorithm, 0) if algorithm in Stemmer.algorithms() else None
        self._stems: dict[str, str] = {}

    def of(self, text: str) -> list[str]:
        """The terms of `text`, in order, repeats kept (term frequencies need them)."""
        return [self.stem(word) for word in words(fold(text))]

    def stem(self, word: str) -> str:
        """The stem of one folded word, remembered for the next `MAX_STEMS_KEPT` distinct words.

        The memory is a dict of strings only, which CPython does not track: however many
        words it holds, a full collection does not walk them (an `lru_cache` on this method
        kept a tuple of self and the word per entry, 65,536 of them, all walked). When it is
        full it starts again: a stem costs ~0.3 µs, and a vocabulary past the bound is rare.
        """
        stem = self._stems.get(word)
        if stem is None:
            stem = self._stemmer.stemWord(word) if self._stemmer is not None else word
            if len(self._stems) >= MAX_STEMS_KEPT:
                self._stems.clear()
            self._stems[word] = stem
        return stem


def words(folded: str) -> Iterator[str]:
    for match in _WORD_RE.finditer(folded):
        word = match.group()
        if len(word) <= MAX_WORD:
            yield word


def marked_spans(text: str, wanted: frozenset[str], terms: Terms) -> list[tuple[str, bool]]:
    """`text` cut into (piece, matched) pieces: each word whose term is in `wanted` is its own piece.

    The words are found in the original text, so their spans are the original's whatever folding
    does to lengths (`ß` -> `ss`, `İ` -> `i̇`); each is folded on its own to be compared.
    """
    pieces: list[tuple[str, bool]] = []
    last = 0
    for match in _WORD_RE.finditer(text):
        word = match.group()
        if len(word) > MAX_WORD:
            continue
        matched = any(terms.stem(w) in wanted for w in words(fold(word)))
        if matched:
            if match.start() > last:
                pieces.append((text[last : match.start()], False))
            pieces.append((word, True))
            last = match.end()
    if last < len(text):
        pieces.append((text[last:], False))
    return pieces
