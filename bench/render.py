"""Rendering a page of results in every format: the time in all, and the longest step of the loop.

    python -m bench.render [--entries 20 100] [--rounds 20]

Each renderer writes its page in turns of the loop (`loop.turns.in_turns`), so
what holds the loop is its longest step, not the whole render. The heap is
frozen first, as the service does after start-up (`loop.heap.settle_heap`),
so a full collection of the import-time heap does not land in a step.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import time
from datetime import UTC, datetime, timedelta

from aggregator.model import Result, Sort, Video
from aggregator.params import SearchParams
from aggregator.render.formats import FORMATS, Format
from aggregator.render.paging import Page
from aggregator.render.presentation import View

ORGS = {"engineering": "Engineering", "medicine": "Medicine"}


def view_of(entries: int) -> View:
    """A page like a real one: every entry with a date, an author, a duration and a thumbnail."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    results = tuple(
        Result(
            Video(
                randtag=f"AbCdEf{i:06d}",
                title=f"Lecture {i}: signals & <systems>",
                link=f"https://cloud.ilosvideos.com/view/AbCdEf{i:06d}",
                embed_url=f"https://cloud.ilosvideos.com/embed/AbCdEf{i:06d}",
                summary="A recorded lecture, with slides.",
                published=start + timedelta(days=i),
                author="Dr Ada Example",
                thumbnail_url="https://cdn.example/thumb.jpg",
                duration_ms=912_000 + i,
            ),
            ("engineering",),
            1.0 / (i + 1),
        )
        for i in range(entries)
    )
    params = SearchParams("lecture", entries, 1, Sort.RELEVANCE, tuple(ORGS))
    return View(
        page=Page(params=params, results=results, total=500),
        base_url="https://videos.example.edu",
        org_names=ORGS,
        all_orgs=tuple(ORGS),
        formats={f.name: f for f in FORMATS},
    )


async def measure(entries: int, rounds: int) -> None:
    view = view_of(entries)
    steps: list[float] = []
    original = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        started = time.perf_counter()
        original(handle)
        steps.append(time.perf_counter() - started)

    async def render(fmt: Format) -> None:
        body = fmt.render(view) if fmt.render else b""
        if inspect.isawaitable(body):  # renderers before they wrote in turns returned bytes
            await body

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    try:
        for fmt in FORMATS:
            if fmt.render is None:
                continue
            await asyncio.create_task(render(fmt))  # warm: imports, templates
            await asyncio.sleep(0)
            steps.clear()
            started = time.perf_counter()
            for _ in range(rounds):
                await asyncio.create_task(render(fmt))
                await asyncio.sleep(0)
            took = (time.perf_counter() - started) / rounds
            await asyncio.sleep(0.01)  # the last step ends, and is counted
            print(
                f"{fmt.name:5} {entries:4} entries: {took * 1000:6.2f} ms in all, "
                f"longest step {max(steps) * 1000:5.2f} ms"
            )
    finally:
        asyncio.events.Handle._run = original  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    gc.collect()
    gc.freeze()
    for entries in args.entries:
        asyncio.run(measure(entries, args.rounds))


if __name__ == "__main__":
    main()
