"""What ordering costs: `search.rank.rank` against the order before it (`search.merge.merge`).

    python -m bench.rankcost

Videos of 6-word titles and 30-word descriptions from a 500-word vocabulary, their
terms made as the parse worker makes them; 8 orgs of 25 (a page's worth, ranked
on the loop) and of 500 (over 1,000 videos, ranked in a thread). Best of 7.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from aggregator.ilos.parseworker import with_terms
from aggregator.model import Sort, Video
from aggregator.search.merge import merge
from aggregator.search.rank import Ranking, rank
from aggregator.search.termstats import Snapshot
from aggregator.terms import Terms


def best_of(runs: int, fn: Callable[..., object], *args: object) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main() -> None:
    rng = random.Random(1)
    words = [f"w{i}" for i in range(500)]
    terms = Terms("en")

    def video(i: int) -> Video:
        title = " ".join(rng.choice(words) for _ in range(6))
        summary = " ".join(rng.choice(words) for _ in range(30))
        return with_terms(Video(f"v{i:06d}", title, "l", "e", summary, author="Ann Lee"), terms)

    stats = Snapshot(1, 10_000, {w: rng.randint(1, 500) for w in words})
    for orgs, each in ((8, 25), (8, 500)):
        answers = [(f"o{o}", [video(o * 1000 + i) for i in range(each)]) for o in range(orgs)]
        ranking = Ranking(tuple(terms.of("w1 w2")), stats)
        before = best_of(7, merge, answers, Sort.RELEVANCE)
        after = best_of(7, rank, answers, ranking)
        print(f"{orgs} orgs x {each}: merge {before:.2f} ms, rank {after:.2f} ms")


if __name__ == "__main__":
    main()
