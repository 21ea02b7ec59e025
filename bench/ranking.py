"""How good is the merged order? The service between simulated org engines, against one central index.

    python -m bench.ranking [--seeds 101-110] [--engines bm25,newest,noisy] [--position-prior X]

A seeded collection with the difficulty fixed (issue 24): 8 orgs of 3,000 down to
30 videos, each leaning to a few of 60 topics; each video has a title, a
description (40 % empty), an author and a hidden transcript of about 150 words
that only its org's engine reads; a few videos are shared by two orgs. 100
queries of 1-3 words of one topic; a video's relevance is graded by topic (2 its
main topic, 1 its second). Each org's engine ranks its own catalogue (its own
BM25 statistics over title, description and transcript; or newest matches
first; or BM25 with noise) and answers its top 25, through the package's
simulated ilos, to the real service, whose merged JSON Feed (count=10, default
sort) is the run scored.

Scored with ir-measures (trec_eval's nDCG, `pip install -e '.[bench]'`), not
with our code: nDCG@10 of the service, of a central BM25 index over every
video's full text (what one engine over everything would give), of taking turns
between the orgs by position (the service's order before issue 24), and of the
best order of what the orgs returned; overlap@10 with the central top ten.
Tune on seeds 1-3; report on 101-110.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp import web

from aggregator.config import parse_config_text
from aggregator.demo.simulator import SimOrg, Simulator, SimVideo
from aggregator.web.app import create_app

SIZES = (3000, 1500, 800, 400, 200, 100, 60, 30)
TOPICS = 60
TOPIC_WORDS = 25
TOPIC_POOL = 600
GENERAL_WORDS = 400
QUERIES = 100
ANSWER = 25  # each org answers its top 25
FAVOURITES = 6  # topics each org leans to
EMPTY_DESCRIPTIONS = 0.4
SHARED = 0.02  # share of each smaller org's videos also held by a larger one
TRANSCRIPT = 150
K1, B = 1.2, 0.75


@dataclass
class Doc:
    randtag: str
    title: str
    description: str
    author: str
    transcript: str
    published: datetime
    topics: tuple[int, ...]  # main, then second (if any)
    orgs: list[int] = field(default_factory=list)

    @property
    def text(self) -> list[str]:
        return f"{self.title} {self.description} {self.transcript}".split()


@dataclass
class Collection:
    docs: dict[str, Doc]
    by_org: list[list[Doc]]
    queries: list[tuple[str, int]]  # (text, topic)
    warm_up: list[tuple[str, int]]  # other queries, that teach the service its term statistics


def pseudo_words(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    out = []
    while len(out) < count:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))) + rng.choice("lmnrtk")
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out


def generate(seed: int) -> Collection:
    rng = random.Random(seed)
    taken: set[str] = set()
    # Topics share words, as lecture topics do: a word belongs to 2-3 topics on average, so a
    # one-word match is often a video about something else.
    pool = pseudo_words(rng, TOPIC_POOL, taken)
    topic_words = [rng.sample(pool, TOPIC_WORDS) for _ in range(TOPICS)]
    general = pseudo_words(rng, GENERAL_WORDS, taken)
    names = [f"{a} {b}" for a in pseudo_words(rng, 30, taken) for b in pseudo_words(rng, 2, taken)]
    docs: dict[str, Doc] = {}
    by_org: list[list[Doc]] = []
    now = datetime(2026, 12, 1, tzinfo=UTC)

    def words_of(topics: Sequence[int], count: int, share: float) -> str:
        out = []
        for _ in range(count):
            if rng.random() < share:
                t = topics[0] if len(topics) == 1 or rng.random() < 0.7 else topics[1]
                out.append(rng.choice(topic_words[t]))
            else:
                out.append(rng.choice(general))
        return " ".join(out)

    for org, size in enumerate(SIZES):
        favourites = rng.sample(range(TOPICS), FAVOURITES)
        videos = []
        for n in range(size):
            main = rng.choice(favourites) if rng.random() < 0.7 else rng.randrange(TOPICS)
            topics = (main,) if rng.random() < 0.5 else (main, rng.randrange(TOPICS))
            doc = Doc(
                randtag=f"o{org}v{n:05d}x{seed % 97:02d}",
                title=words_of(topics, rng.randint(4, 7), 0.7),
                description=""
                if rng.random() < EMPTY_DESCRIPTIONS
                else words_of(topics, rng.randint(10, 25), 0.5),
                author=rng.choice(names),
                transcript=words_of(topics, rng.randint(TRANSCRIPT - 30, TRANSCRIPT + 30), 0.45),
                published=now - timedelta(days=rng.uniform(0, 3 * 365)),
                topics=topics,
                orgs=[org],
            )
            docs[doc.randtag] = doc
            videos.append(doc)
        by_org.append(videos)
    for org in range(1, len(SIZES)):  # a few videos of each smaller org are held by a larger one too
        for doc in rng.sample(by_org[org], max(1, int(len(by_org[org]) * SHARED))):
            other = rng.randrange(org)
            by_org[other].append(doc)
            doc.orgs.append(other)
    queries, warm_up = [], []
    for batch in (queries, warm_up):
        for _ in range(QUERIES):
            topic = rng.randrange(TOPICS)
            batch.append((" ".join(rng.sample(topic_words[topic], rng.randint(1, 3))), topic))
    return Collection(docs, by_org, queries, warm_up)


class BM25:
    """Plain BM25 over a list of documents' full text, with their own statistics."""

    def __init__(self, docs: Sequence[Doc]) -> None:
        self.docs = list(docs)
        self.tf = [Counter(d.text) for d in self.docs]
        self.lengths = [sum(c.values()) for c in self.tf]
        self.avg = sum(self.lengths) / max(1, len(self.docs))
        self.df: Counter[str] = Counter()
        for c in self.tf:
            self.df.update(c.keys())
        self.postings: dict[str, list[int]] = {}
        for i, c in enumerate(self.tf):
            for term in c:
                self.postings.setdefault(term, []).append(i)

    def search(self, query: str) -> list[tuple[float, Doc]]:
        n = len(self.docs)
        scores: dict[int, float] = {}
        for term in set(query.split()):
            df = self.df.get(term, 0)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for i in self.postings[term]:
                tf = self.tf[i][term]
                norm = K1 * (1 - B + B * self.lengths[i] / self.avg)
                scores[i] = scores.get(i, 0.0) + idf * tf * (K1 + 1) / (tf + norm)
        return sorted(((s, self.docs[i]) for i, s in scores.items()), key=lambda x: (-x[0], x[1].randtag))


class Engines(Simulator):
    """The simulated ilos, each org's search answered by its own engine."""

    def __init__(self, orgs: list[SimOrg], engines: dict[str, BM25], kind: str, seed: int) -> None:
        super().__init__(orgs)
        self.engines = engines
        self.kind = kind
        self.rng = random.Random(seed * 7919)
        self.answers: dict[tuple[str, str], list[str]] = {}  # (org, query) -> randtags, in order

    def matches(self, org: SimOrg, query: str) -> list[SimVideo]:
        engine = self.engines[org.name]
        hits = engine.search(query)
        if self.kind == "newest":
            hits = sorted(hits, key=lambda h: (-h[1].published.timestamp(), h[1].randtag))
        elif self.kind == "noisy":
            hits = sorted(((s * math.exp(self.rng.gauss(0, 0.5)), d) for s, d in hits), key=lambda h: -h[0])
        by_tag = {v.randtag: v for v in org.videos}
        chosen = [by_tag[d.randtag] for _, d in hits[:ANSWER]]
        self.answers[(org.name, query)] = [v.randtag for v in chosen]
        return chosen


def sim_orgs(collection: Collection) -> list[SimOrg]:
    orgs = []
    for i, docs in enumerate(collection.by_org):
        videos = [SimVideo(d.randtag, d.title, d.author, d.published, 60_000, 0, d.description) for d in docs]
        orgs.append(SimOrg(f"org{i}", f"ranking-bench-key-{i:02d}-0123456789", videos, duration_child="ms"))
    return orgs


async def run_service(collection: Collection, kind: str, seed: int, prior: float | None) -> dict[str, object]:
    engines = {f"org{i}": BM25(docs) for i, docs in enumerate(collection.by_org)}
    orgs = sim_orgs(collection)
    sim = Engines(orgs, engines, kind, seed)
    sim_url = await sim.start()
    ranking = f"[ranking]\nposition_prior = {prior}\n" if prior is not None else ""
    config = parse_config_text(
        f'[server]\nparse_workers = 0\naccess_log = false\n[upstream]\nbase_url = "{sim_url}"\n'
        f"rate_limit = 1000000\ntimeout = 30\ndeadline = 60\n{ranking}"
        + "".join(f'[[orgs]]\nid = "{o.name}"\napi_key = "{o.api_key}"\n' for o in orgs),
        environ={},
    )
    now = [datetime.now(UTC).timestamp()]
    runner = web.AppRunner(create_app(config, clock=lambda: now[0]), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    runs: dict[str, list[str]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            # A service in use has seen many answers: the warm-up queries teach it term
            # statistics, which it uses once its next snapshot is due (a few minutes on).
            for query, _ in collection.warm_up:
                async with session.get(f"{base}/search.json", params={"q": query, "count": "10"}) as resp:
                    await resp.read()
            now[0] += 3600
            sim.answers.clear()
            for n, (query, _) in enumerate(collection.queries):
                async with session.get(f"{base}/search.json", params={"q": query, "count": "10"}) as resp:
                    feed = await resp.json()
                runs[f"q{n}"] = [item["_ilos"]["randtag"] for item in feed["items"]]
    finally:
        await runner.cleanup()
        await sim.stop()
    return {"service": runs, "answers": sim.answers}


def round_robin(answers: list[list[str]]) -> list[str]:
    """The order before issue 24: the sum of 1/position over the orgs that returned a video."""
    scores: dict[str, float] = {}
    for answer in answers:
        for position, tag in enumerate(answer, start=1):
            scores[tag] = scores.get(tag, 0.0) + 1 / position
    return sorted(scores, key=lambda t: (-scores[t], t))[:10]


def score(collection: Collection, runs: dict[str, dict[str, list[str]]]) -> dict[str, float]:
    import ir_measures
    from ir_measures import nDCG

    qrels = []
    for n, (_, topic) in enumerate(collection.queries):
        for doc in collection.docs.values():
            grade = 2 if doc.topics[0] == topic else (1 if topic in doc.topics[1:] else 0)
            if grade:
                qrels.append(ir_measures.Qrel(f"q{n}", doc.randtag, grade))
    out = {}
    for name, run in runs.items():
        scored = [
            ir_measures.ScoredDoc(qid, tag, float(len(tags) - i))
            for qid, tags in run.items()
            for i, tag in enumerate(tags)
        ]
        out[name] = ir_measures.calc_aggregate([nDCG @ 10], qrels, scored)[nDCG @ 10] if scored else 0.0
    central = runs["central"]
    overlap = [len(set(runs["service"].get(q, [])[:10]) & set(central[q][:10])) / 10 for q in central]
    out["overlap@10"] = statistics.mean(overlap)
    return out


def evaluate(seed: int, kind: str, prior: float | None) -> dict[str, float]:
    collection = generate(seed)
    result = asyncio.run(run_service(collection, kind, seed, prior))
    service: dict[str, list[str]] = result["service"]  # type: ignore[assignment]
    answers: dict[tuple[str, str], list[str]] = result["answers"]  # type: ignore[assignment]
    central_engine = BM25(list(collection.docs.values()))
    runs: dict[str, dict[str, list[str]]] = {"service": service, "central": {}, "round_robin": {}, "best": {}}
    grades = {}
    for n, (query, topic) in enumerate(collection.queries):
        qid = f"q{n}"
        runs["central"][qid] = [d.randtag for _, d in central_engine.search(query)[:10]]
        per_org = [answers.get((f"org{i}", query), []) for i in range(len(SIZES))]
        runs["round_robin"][qid] = round_robin(per_org)
        returned = {tag for answer in per_org for tag in answer}
        grades = {
            t: (
                2
                if collection.docs[t].topics[0] == topic
                else 1
                if topic in collection.docs[t].topics[1:]
                else 0
            )
            for t in returned
        }
        runs["best"][qid] = sorted(returned, key=lambda t: (-grades[t], t))[:10]
    return score(collection, runs)


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="101-110", help="tune on 1-3, report on 101-110")
    parser.add_argument("--engines", default="bm25,newest,noisy")
    parser.add_argument("--position-prior", type=float, default=None, help="default: the service's")
    args = parser.parse_args()
    seeds = seeds_of(args.seeds)
    print(
        f"seeds {args.seeds}, position_prior {args.position_prior if args.position_prior is not None else 'default'}"
    )
    print("engines   service/central        round-robin/central    best/central   overlap@10   service >= rr")
    for kind in args.engines.split(","):
        ratios, rr, best, overlap, wins = [], [], [], [], 0
        for seed in seeds:
            s = evaluate(seed, kind, args.position_prior)
            ratios.append(s["service"] / s["central"])
            rr.append(s["round_robin"] / s["central"])
            best.append(s["best"] / s["central"])
            overlap.append(s["overlap@10"])
            wins += s["service"] >= s["round_robin"]
        print(
            f"{kind:8}  {statistics.mean(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})   "
            f"{statistics.mean(rr):.3f} ({min(rr):.2f}-{max(rr):.2f})   "
            f"{statistics.mean(best):.2f} ({min(best):.2f}-{max(best):.2f})   "
            f"{statistics.mean(overlap):.2f}         {wins} of {len(seeds)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
