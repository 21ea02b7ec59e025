"""Every pass over upstream bytes grows linearly with them, on pathological inputs too.

    python -m bench.parsegrowth [--base 16000]

Times `parsing.parse_search_answer` (the one pass, run in a worker in the
service) and `parsing.plain_text` (inside it, on each text field) on inputs
built to hurt a backtracking regex or a naive parser, at 1x, 4x and 16x a base
size. Linear growth means 4x the input costs about 4x the time; the goal is
at most about 5x for each step. It is a benchmark, not a timed test.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from aggregator.ilos.parsing import UnparseableAnswer, parse_search_answer, plain_text

ITEM = (
    b"<item><title>t</title><link>https://app.ilosvideos.com/view/ABCDEFGH%04d</link>"
    b"<description>d</description></item>"
)


def rss(inner: bytes) -> bytes:
    return b'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title>' + inner + b"</channel></rss>"


# name -> (what it builds at size n, the function it feeds)
CASES: dict[str, tuple[Callable[[int], bytes | str], Callable[[bytes | str], object]]] = {
    "unclosed <link (the old pre-scan's killer)": (
        lambda n: b'<rss version="2.0"><channel><item ' + b"<link " * n,
        lambda b: _parse(b),
    ),
    "many items": (lambda n: rss(b"".join(ITEM % (i % 10_000) for i in range(n // 10))), lambda b: _parse(b)),
    "one huge title": (
        lambda n: rss(b"<item><title>" + b"a&amp;" * n + b"</title></item>"),
        lambda b: _parse(b),
    ),
    "deep nesting": (
        lambda n: rss(b"<item>" + b"<x>" * (n // 4) + b"</x>" * (n // 4) + b"</item>"),
        lambda b: _parse(b),
    ),
    "summary: <br without >": (lambda n: "<br" * n, lambda t: plain_text(str(t))),
    "summary: <img without src": (lambda n: "<img " + "a " * n, lambda t: plain_text(str(t))),
    "summary: many entities": (lambda n: "&#169;" * n, lambda t: plain_text(str(t))),
    "not XML at all": (lambda n: b"<html><body>" + b"<p>x" * n, lambda b: _parse(b)),
}


def _parse(body: bytes | str) -> object:
    try:
        return parse_search_answer(body if isinstance(body, bytes) else body.encode())
    except UnparseableAnswer:
        return None


def best_of(fn: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=int, default=16_000)
    args = parser.parse_args()
    print(f"{'input':46} {'1x':>9} {'4x':>9} {'16x':>9}   growth per 4x")
    worst = 0.0
    for name, (build, run) in CASES.items():
        times = []
        for factor in (1, 4, 16):
            data = build(args.base * factor)
            times.append(best_of(lambda data=data, run=run: run(data)))
        growth = [times[1] / max(times[0], 1e-6), times[2] / max(times[1], 1e-6)]
        worst = max(worst, *growth)
        print(
            f"{name:46} "
            + " ".join(f"{t * 1000:8.1f}ms" for t in times)
            + f"   {growth[0]:.1f}x, {growth[1]:.1f}x"
        )
    print(f"worst growth per 4x the input: {worst:.1f}x (goal: at most about 5x)")


if __name__ == "__main__":
    main()
