"""What ordering costs: `search.rank.rank` against the order before it (`search.merge.merge`).

    python -m bench.rankcost

The answers are the ranking bench's (`bench.ranking`, seed 101): for each of its
first 40 queries, each of the 8 orgs' engines answers its top 25, so a merge
holds up to 200 videos, their terms made as the parse worker makes them, with
statistics learned from the warm-up queries' answers (their videos are the sample
that says which words go together). Each merge is timed best of 15; the table
gives the median over the queries, and the extra cost per 200 videos. The words
that go with a query's are worked out the first time a snapshot is asked for
them and kept with it: that first time is timed apart ("expansion, first ask").
A last row ranks 8 orgs of 500 (over 1,000 videos, ranked in a thread).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable

from aggregator.ilos.parseworker import with_terms
from aggregator.model import Sort, Video
from aggregator.search.associations import Associations
from aggregator.search.merge import merge
from aggregator.search.rank import Ranking, rank
from aggregator.search.termstats import MAX_TERMS_PER_VIDEO, Snapshot
from aggregator.terms import Terms
from bench.ranking import ANSWER, BM25, SIZES, Doc, generate

Answers = list[tuple[str, list[Video]]]


def best_of(runs: int, fn: Callable[..., object], *args: object) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def bench_answers(seed: int, kind: str, queries: int) -> tuple[list[tuple[str, Answers]], Snapshot]:
    """The orgs' answers to the bench's queries, and the statistics the warm-up queries teach."""
    collection = generate(seed)
    engines = [BM25(docs) for docs in collection.by_org]
    terms = Terms("en")
    videos: dict[str, Video] = {}

    def video(doc: Doc) -> Video:
        if doc.randtag not in videos:
            plain = Video(doc.randtag, doc.title, "l", "e", doc.description, doc.published, doc.author)
            videos[doc.randtag] = with_terms(plain, terms)
        return videos[doc.randtag]

    def answers(query: str) -> Answers:
        out = []
        for org, engine in enumerate(engines):
            hits = engine.search(query)
            if kind == "newest":
                hits = sorted(hits, key=lambda h: (-h[1].published.timestamp(), h[1].randtag))
            out.append((f"org{org}", [video(d) for _, d in hits[:ANSWER]]))
        return out

    df: dict[str, int] = {}
    sample: list[bytes] = []
    for query, _ in collection.warm_up:
        for _, org_videos in answers(query):
            for v in org_videos:
                counted = sorted(set(" ".join(v.terms).split()))[:MAX_TERMS_PER_VIDEO]
                for term in counted:
                    df[term] = df.get(term, 0) + 1
                sample.append(" ".join(counted).encode())
    stats = Snapshot(1, len(videos), df, asyncio.run(Associations.of(sample)))
    return [(query, answers(query)) for query, _ in collection.queries[:queries]], stats


def main() -> None:
    terms = Terms("en")
    print(
        f"{'answers':28} {'videos':>7} {'merge ms':>9} {'rank ms':>8} {'extra ms per 200':>17}"
        f" {'expansion, first ask ms':>24}"
    )
    for kind in ("bm25", "newest"):
        cases, stats = bench_answers(101, kind, 40)
        before, after, extra, sizes, first = [], [], [], [], []
        for query, answers in cases:
            size = len({v.randtag for _, vs in answers for v in vs})
            ranking = Ranking(tuple(terms.of(query)), stats)
            unasked = stats.associations.unasked()
            started = time.perf_counter()
            unasked.expansion(ranking.terms)
            first.append((time.perf_counter() - started) * 1000)
            m, r = best_of(15, merge, answers, Sort.RELEVANCE), best_of(15, rank, answers, ranking)
            before.append(m)
            after.append(r)
            extra.append((r - m) * 200 / max(1, size))
            sizes.append(size)
        print(
            f"{kind + ' engines, ' + str(len(SIZES)) + ' orgs x 25':28} {statistics.median(sizes):7.0f} "
            f"{statistics.median(before):9.2f} {statistics.median(after):8.2f} {statistics.median(extra):17.2f}"
            f" {statistics.median(first):24.2f}"
        )
    rng = random.Random(1)
    words = [f"w{i}" for i in range(5000)]

    def synthetic(i: int) -> Video:
        title = " ".join(rng.choice(words) for _ in range(6))
        summary = " ".join(rng.choice(words) for _ in range(30))
        return with_terms(Video(f"v{i:06d}", title, "l", "e", summary, author="Ann Lee"), terms)

    large = [(f"o{o}", [synthetic(o * 1000 + i) for i in range(500)]) for o in range(8)]
    m, r = (
        best_of(5, merge, large, Sort.RELEVANCE),
        best_of(5, rank, large, Ranking(tuple(terms.of("w1 w2")), stats)),
    )
    print(f"{'synthetic, 8 orgs x 500':28} {4000:7} {m:9.2f} {r:8.2f} {'(in a thread)':>17}")


if __name__ == "__main__":
    main()
