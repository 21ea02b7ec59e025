"""Relevance: one scale for every organisation's results, so the best matches come first.

Each org's engine ranks its own catalogue by its own statistics, and a 30-video
department's first result is no better than a 3,000-video faculty's tenth just
for being first. So every returned video is scored again, the same way, by how
well the text the service sees of it (title, description, author) matches the
query: BM25F (Robertson & Zaragoza 2009), with term statistics over every org's
videos (`termstats`: the shared snapshot plus this answer's videos). Re-scoring
the titles and snippets of what the engines return with one function beat every
rank-based merge in enterprise search (Li, Thomas & Hawking 2013).

The query is widened twice before the final pass: by the words its best first
matches share (pseudo-relevance feedback), and by the words that go with its words
across a sample of every video seen (`associations`). The second finds a video about
the query's subject that shares none of its words where the service can see, which
matters most when an org lists its matches newest first.

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
from typing import NamedTuple

from aggregator.config import Config
from aggregator.loop.turns import off_loop
from aggregator.model import Result, Sort, Video
from aggregator.search.merge import gather, merge
from aggregator.search.termstats import Snapshot, TermStats
from aggregator.terms import Terms

K1 = 1.2
B = 0.75
TITLE, DESCRIPTION, AUTHOR = 2.0, 1.0, 0.5  # how much a word counts in each field
FIELD_WEIGHTS = (TITLE, DESCRIPTION, AUTHOR)
FIELDS = ("title", "description", "author")
DIGITS = 6  # scores are rounded to this many decimals: equal inputs, equal bytes
ENOUGH_VIDEOS = 2_000  # statistics over this many videos need no help from the answer ranked
FEEDBACK_DOCS = 10  # the best first-pass matches whose shared terms expand the query
FEEDBACK_TERMS = 10
# Videos above which ordering goes to a thread: below, the work takes less than the GIL waits a
# thread costs the loop. Ranking is ~10 us a video (a 500-video answer held the soak's loop
# 20-27 ms on a slow host hour), merging by date a tenth of that.
RANK_OFF_LOOP = 200
MERGE_OFF_LOOP = 1000
# How much the words that go with the query's (`associations`) weigh when every org's order says
# something of relevance; they weigh fully when none does (newest first). Chosen on seeds 1-3 of
# bench.ranking: 1.0 lost 0.03 with noisy orgs, 0 lost 0.007 with BM25 orgs.
EXPANSION_FLOOR = 0.25
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
        self, query: str, answers: Sequence[tuple[str, Sequence[Video]]], sort: Sort
    ) -> list[Result]:
        """Past a few milliseconds' work (`RANK_OFF_LOOP`, `MERGE_OFF_LOOP` videos), in a thread
        (`loop.turns.off_loop`)."""
        count = sum(len(videos) for _, videos in answers)
        if sort is not Sort.RELEVANCE:
            return await off_loop(count > MERGE_OFF_LOOP, merge, answers, sort)
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
        # A query's widening is worked out once a snapshot, from up to a thousand sampled videos
        # a word (`associations`): that first time, in a thread as a large merge is.
        heavy = count > RANK_OFF_LOOP or not stats.associations.ready(ranking.terms)
        return await off_loop(heavy, rank, answers, ranking)

    def learn(self, video: Video) -> None:
        self.stats.learn((video,))


def rank(answers: Sequence[tuple[str, Sequence[Video]]], ranking: Ranking) -> list[Result]:
    """`answers` are (org id, videos in that org's order); duplicates merged by randtag."""
    videos, ranks = gather(answers)
    docs = {tag: Doc.of(v) for tag, v in videos.items()}
    every = list(docs.values())
    avg_length = sum(d.length for d in every) / max(1, len(every))
    # While the shared statistics are thin (a new service), this answer's own videos make them up.
    # Later they are in the snapshot already (they were learned as they were parsed).
    thin = ranking.stats.videos < ENOUGH_VIDEOS
    in_answer = Counter(itertools.chain.from_iterable(d.terms for d in every)) if thin else Counter()
    answer = (len(every) if thin else 0, in_answer)
    weights = ranking.weights or {}
    # An org that answers in date order says nothing of relevance by its order: this answer if it
    # can tell (three dated videos or more), else what the org's answers have shown so far.
    learned = ranking.order_says or {}
    says = {org_id: 0.0 if _in_date_order(vs) else learned.get(org_id, 1.0) for org_id, vs in answers}
    typed = dict.fromkeys(ranking.terms, 1.0)
    idf = _idf(ranking.stats, answer, typed)
    # A term's BM25F part is the same in both passes, so the second adds only the feedback terms.
    words = frozenset(typed)
    text = {tag: _bm25f(doc, idf, words, avg_length) for tag, doc in docs.items()}
    typed_part = text  # above 0 exactly where a typed word is held (every idf is above 0)
    if typed:
        top = sorted((t for t in videos if text[t] > 0), key=lambda t: (-text[t], t))
        feedback = _feedback(ranking.stats, [docs[t] for t in top[:FEEDBACK_DOCS]], answer, typed)
        # The words that go with the query's count most where the orgs' orders say least.
        listed = sum(len(vs) for _, vs in answers) or 1
        silent = sum(len(vs) * (1 - says[org_id]) for org_id, vs in answers) / listed
        scale = EXPANSION_FLOOR + (1 - EXPANSION_FLOOR) * silent
        for term, weight in ranking.stats.associations.expansion(ranking.terms).items():
            feedback[term] = round(feedback.get(term, 0.0) + weight * scale, DIGITS)
        if feedback:
            more = _idf(ranking.stats, answer, feedback)
            idf.update(more)
            expansion = frozenset(more)
            text = {
                tag: score + _bm25f(docs[tag], more, expansion, avg_length) for tag, score in text.items()
            }
    best = sum(idf.values()) * (K1 + 1) or 1.0
    prior = {
        org_id: says[org_id] * weights.get(org_id, 1.0) * ranking.position_prior for org_id, _ in answers
    }
    results = []
    orgs: tuple[str, ...]
    for tag, video in videos.items():
        placed = ranks[tag]
        if len(placed) == 1:  # most videos: one org returned them
            ((org, position),) = placed
            weight, bonus, orgs = weights.get(org, 1.0), prior[org] / (1 + math.log(position)), (org,)
        else:
            weight = max(weights.get(org, 1.0) for org, _ in placed)
            bonus = max(prior[org] / (1 + math.log(position)) for org, position in placed)
            orgs = tuple([org for org, _ in placed])
        score = text[tag]
        matched = docs[tag].matched(words) if typed_part[tag] else ()
        results.append(
            Result(video, orgs, round(weight * score / best + bonus, DIGITS), tuple(placed), matched)
        )
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
    stats: Snapshot, top: Sequence[Doc], answer: AnswerCounts, query: Mapping[str, float]
) -> dict[str, float]:
    """Pseudo-relevance feedback (RM3, Lavrenko & Croft 2001; Abdul-Jaleel et al. 2004): the terms
    the best first-pass matches share, weighted by how often and how telling they are. A video
    about the query's subject that lacks its exact words then still scores."""
    if not top:
        return {}
    weight: dict[str, float] = {}
    for doc in top:
        share = 1.0 / (doc.length or 1.0)
        for field_weight, part in zip(FIELD_WEIGHTS, doc.fields, strict=True):
            for term in part.split():
                weight[term] = weight.get(term, 0.0) + field_weight * share
    for term in query:
        weight.pop(term, None)
    idf = _idf(stats, answer, weight)
    ranked = sorted(weight, key=lambda t: (-weight[t] * idf[t], t))[:FEEDBACK_TERMS]
    if not ranked:
        return {}
    most = weight[ranked[0]] * idf[ranked[0]]
    return {t: round(FEEDBACK_WEIGHT * weight[t] * idf[t] / most, DIGITS) for t in ranked}


class Doc(NamedTuple):
    """A video's terms as scoring reads them: the set of them (made in C), and its length. A
    field's words are split again only where a query term is in the set, which few videos are."""

    fields: tuple[str, str, str]  # the terms of the title, description and author, space-separated
    terms: frozenset[str]
    length: float  # each field's word count times its weight

    @classmethod
    def of(cls, video: Video) -> Doc:
        title, description, author = video.terms
        length = TITLE * _count(title) + DESCRIPTION * _count(description) + AUTHOR * _count(author)
        return cls(video.terms, frozenset(f"{title} {description} {author}".split()), length)

    def matched(self, typed: frozenset[str]) -> tuple[str, ...]:
        """Which fields hold a word typed."""
        if typed.isdisjoint(self.terms):
            return ()
        return tuple(
            name for name, part in zip(FIELDS, self.fields, strict=True) if not typed.isdisjoint(part.split())
        )


def _count(terms: str) -> int:
    """How many terms a field holds: they are joined by single spaces (`parseworker.with_terms`)."""
    return terms.count(" ") + 1 if terms else 0


AnswerCounts = tuple[int, Mapping[str, int]]  # an answer's videos, and how many hold each term


def _idf(stats: Snapshot, answer: AnswerCounts, query: Mapping[str, float]) -> dict[str, float]:
    """Each query term's BM25 idf over the snapshot and this answer's videos together, times the
    term's weight in the query (1 for the words typed, less for feedback terms)."""
    count, in_answer = answer
    n = stats.videos + count
    idf = {}
    for term, weight in query.items():
        df = stats.df.get(term, 0) + in_answer.get(term, 0)
        idf[term] = weight * math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf


def _bm25f(doc: Doc, idf: Mapping[str, float], wanted: frozenset[str], avg_length: float) -> float:
    """The video's BM25F score for the (weighted) query; `wanted` is the query's terms."""
    matched = doc.terms & wanted
    if not matched:
        return 0.0
    norm = K1 * (1 - B + B * doc.length / avg_length) if avg_length else K1
    title, description, author = (part.split() for part in doc.fields)
    score = 0.0
    for term in matched:
        count = (
            TITLE * title.count(term) + DESCRIPTION * description.count(term) + AUTHOR * author.count(term)
        )
        score += idf[term] * count * (K1 + 1) / (count + norm)
    return score
