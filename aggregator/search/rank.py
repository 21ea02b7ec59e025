"""Relevance: one scale for every organisation's results, so the best matches come first.

Each org's engine ranks its own catalogue by its own statistics, and a 30-video
department's first result is no better than a 3,000-video faculty's tenth just
for being first. So every returned video is scored again, the same way, by how
well the text the service sees of it (title, description, author) matches the
query: BM25F (Robertson & Zaragoza 2009), with term statistics over every org's
videos (`termstats`: the shared snapshot plus this answer's videos). Re-scoring
the titles and snippets of what the engines return with one function beat every
rank-based merge in enterprise search (Li, Thomas & Hawking 2013).

Each org's own order still says what the service cannot see (transcripts, plays),
so it is blended in as a prior: `position_prior / (1 + ln(rank in that org))`,
the same for every org whatever its size. `[[orgs]] weight` scales an org's
results. Scores are rounded and ties broken on the randtag: the same answers and
the same statistics give the same order, and so the same bytes.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aggregator.config import Config
from aggregator.loop.turns import off_loop
from aggregator.model import Result, Sort, Video
from aggregator.search.merge import gather, merge
from aggregator.search.termstats import Snapshot, TermStats
from aggregator.terms import Terms

K1 = 1.2
B = 0.75
FIELD_WEIGHTS = (2.0, 1.0, 0.5)  # title, description, author
FIELDS = ("title", "description", "author")
DIGITS = 6  # scores are rounded to this many decimals: equal inputs, equal bytes
FEEDBACK_DOCS = 10  # the best first-pass matches whose shared terms expand the query
FEEDBACK_TERMS = 10
FEEDBACK_WEIGHT = 0.5  # the weight of the most telling feedback term; a typed word weighs 1


@dataclass(frozen=True, slots=True)
class Ranking:
    """What relevance ranking needs besides the answers: the query's terms and the settings."""

    terms: tuple[str, ...]  # the query's distinct terms (`terms.Terms.of`)
    stats: Snapshot
    position_prior: float = 0.3
    weights: Mapping[str, float] | None = None  # org id -> weight; absent: 1.0
    order_says: Mapping[str, float] | None = None  # org id -> how much its order says (Ranker)


class Ranker:
    """Orders a search's merged results: by relevance (`rank`) or newest first (`merge.merge`)."""

    def __init__(self, config: Config, stats: TermStats) -> None:
        self.config = config
        self.stats = stats
        self.terms = Terms(config.description.language)
        self._weights = {o.id: o.weight for o in config.orgs}
        self._orders: dict[str, list[int]] = {}  # org id -> [answers in date order, answers that could tell]
        self._order_says: dict[str, float] = {}  # as of the statistics' snapshot in force
        self._version = -1

    async def order(
        self, query: str, answers: Sequence[tuple[str, Sequence[Video]]], sort: Sort, large: bool
    ) -> list[Result]:
        """`large`: enough videos that the work goes to a thread (`loop.turns.off_loop`)."""
        if sort is not Sort.RELEVANCE:
            return await off_loop(large, merge, answers, sort)
        stats = await self.stats.snapshot()
        if stats.version != self._version:  # what orders say moves with the snapshot, not between
            self._version = stats.version
            self._order_says = {org: 1 - dated / told for org, (dated, told) in self._orders.items() if told}
        for org_id, videos in answers:
            in_date_order = _in_date_order(videos)
            if in_date_order is not None:
                counts = self._orders.setdefault(org_id, [0, 0])
                counts[0] += in_date_order
                counts[1] += 1
        ranking = Ranking(
            terms=tuple(dict.fromkeys(self.terms.of(query))),
            stats=stats,
            position_prior=self.config.ranking.position_prior,
            weights=self._weights,
            order_says=self._order_says,
        )
        return await off_loop(large, rank, answers, ranking)

    def learn(self, video: Video) -> None:
        self.stats.learn((video,))


def rank(answers: Sequence[tuple[str, Sequence[Video]]], ranking: Ranking) -> list[Result]:
    """`answers` are (org id, videos in that org's order); duplicates merged by randtag."""
    videos, ranks = gather(answers)
    fields = {tag: _fields(v) for tag, v in videos.items()}
    docs = list(fields.values())
    avg_length = sum(length for _, length, _ in docs) / max(1, len(docs))
    weights = ranking.weights or {}
    query = dict.fromkeys(ranking.terms, 1.0)
    if query:
        idf = _idf(ranking.stats, docs, query)
        first = {tag: _bm25f(fields[tag], idf, avg_length) for tag in videos}
        top = sorted((t for t in videos if first[t] > 0), key=lambda t: (-first[t], t))
        query.update(_feedback(ranking.stats, [fields[t] for t in top[:FEEDBACK_DOCS]], docs, query))
    idf = _idf(ranking.stats, docs, query)
    best = sum(idf.values()) * (K1 + 1) or 1.0
    text = {tag: _bm25f(fields[tag], idf, avg_length) for tag in videos}
    # An org that answers in date order says nothing of relevance by its order: this answer if it
    # can tell (three dated videos or more), else what the org's answers have shown so far.
    learned = ranking.order_says or {}
    says = {
        org_id: 0.0 if _in_date_order(org_videos) else learned.get(org_id, 1.0)
        for org_id, org_videos in answers
    }
    results = []
    for tag, video in videos.items():
        score = text[tag]
        prior = max(
            says[org] * weights.get(org, 1.0) * ranking.position_prior / (1 + math.log(position))
            for org, position in ranks[tag]
        )
        weight = max(weights.get(org, 1.0) for org, _ in ranks[tag])
        final = round(weight * score / best + prior, DIGITS)
        orgs = tuple(org for org, _ in ranks[tag])
        results.append(Result(video, orgs, final, tuple(ranks[tag]), _matched(fields[tag], ranking.terms)))
    results.sort(key=lambda r: (-r.score, r.video.randtag))
    return results


def _in_date_order(videos: Sequence[Video]) -> bool | None:
    """Whether an answer lists its videos newest first; None when it cannot tell (fewer than
    three dated videos)."""
    dates = [v.published for v in videos if v.published is not None]
    if len(dates) < 3:
        return None
    return all(a >= b for a, b in itertools.pairwise(dates))


def _feedback(
    stats: Snapshot, top: Sequence[Doc], every: Sequence[Doc], query: Mapping[str, float]
) -> dict[str, float]:
    """Pseudo-relevance feedback (RM3, Lavrenko & Croft 2001; Abdul-Jaleel et al. 2004): the terms
    the best first-pass matches share, weighted by how often and how telling they are. A video
    about the query's subject that lacks its exact words then still scores."""
    if not top:
        return {}
    weight: dict[str, float] = {}
    for tf, length, _ in top:
        for term, count in tf.items():
            if term not in query:
                weight[term] = weight.get(term, 0.0) + count / (length or 1.0)
    idf = _idf(stats, every, weight)
    ranked = sorted(weight, key=lambda t: (-weight[t] * idf[t], t))[:FEEDBACK_TERMS]
    if not ranked:
        return {}
    most = weight[ranked[0]] * idf[ranked[0]]
    return {t: round(FEEDBACK_WEIGHT * weight[t] * idf[t] / most, DIGITS) for t in ranked}


Doc = tuple[dict[str, float], float, tuple[str, str, str]]  # weighted term counts, length, the fields


def _fields(video: Video) -> Doc:
    """The video's terms counted once, each field's by its weight, and its weighted length."""
    tf: dict[str, float] = {}
    length = 0.0
    for w, part in zip(FIELD_WEIGHTS, video.terms, strict=True):
        words = part.split()
        length += w * len(words)
        for term in words:
            tf[term] = tf.get(term, 0.0) + w
    return tf, length, video.terms


def _idf(stats: Snapshot, docs: Sequence[Doc], query: Mapping[str, float]) -> dict[str, float]:
    """Each query term's BM25 idf over the snapshot and this answer's videos together, times the
    term's weight in the query (1 for the words typed, less for feedback terms)."""
    n = stats.videos + len(docs)
    wanted = query.keys()
    in_answer: Counter[str] = Counter()
    for tf, _, _ in docs:  # one pass, the set operation in C
        in_answer.update(tf.keys() & wanted)
    idf = {}
    for term, weight in query.items():
        df = stats.df.get(term, 0) + in_answer[term]
        idf[term] = weight * math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf


def _bm25f(doc: Doc, idf: Mapping[str, float], avg_length: float) -> float:
    """The video's BM25F score for the (weighted) query."""
    tf, length, _ = doc
    norm = K1 * (1 - B + B * length / avg_length) if avg_length else K1
    score = 0.0
    for term in tf.keys() & idf.keys():
        count = tf[term]
        score += idf[term] * count * (K1 + 1) / (count + norm)
    return score


def _matched(doc: Doc, typed: Sequence[str]) -> tuple[str, ...]:
    """Which fields hold a word typed."""
    return tuple(
        name for name, part in zip(FIELDS, doc[2], strict=True) if any(f" {t} " in f" {part} " for t in typed)
    )
