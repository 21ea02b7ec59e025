"""Where feedparser runs: worker processes beside the event loop, fed through pipes by the loop.

Parsing is CPU work and the loop must not wait on it, so answers are parsed in
worker processes (`aggregator.ilos.parseworker`) that use the other cores. The
loop writes each body to an idle worker's stdin and reads the videos back from
its stdout, as it reads any socket.

Not `concurrent.futures.ProcessPoolExecutor`, which this module used before:
it feeds and reads its workers from two threads of the serving process, and
each takes the GIL to hand a body over or a result back. Parsing happens when
the cores are busy, and the kernel then often preempted one of those threads
while it held the GIL; the loop waited for it. A soak traced per iteration
found loop iterations of 15-25 ms with 1-6 ms of the loop's CPU in them, the
rest neither CPU nor waiting for a core (docs/benchmarks.md). Here no thread
of ours runs beside the loop.

A worker that dies (killed for memory, say) is replaced, and the answer it was
parsing is tried once more on the new one, so one lost process is not a service
that fails every search until it is restarted. `parse_workers = 0` parses in
one thread instead: for tests, and for hosts that cannot start processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import aggregator
from aggregator.ilos import parseworker
from aggregator.ilos.parseworker import ANSWER, FAILED, REQUEST, parse_to_lines
from aggregator.loop.turns import in_turns
from aggregator.model import Video
from aggregator.terms import Terms

log = logging.getLogger(__name__)
PIPE_LIMIT = 2**20  # bytes a worker's answer may buffer before the loop reads it
STOP_WAIT = 5.0  # seconds a worker gets to exit once its stdin is closed
_PACKAGE_ROOT = str(Path(aggregator.__file__).resolve().parent.parent)  # the folder holding `aggregator`


class ParseFailed(Exception):
    """The worker could not read the answer as RSS or Atom. Carries only the exception's class name."""


class WorkerLost(Exception):
    """A parse worker died (or could not be started) twice for the same answer."""


class _Worker:
    """One worker process and its two pipes; one exchange at a time (the pool sees to it)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, language: str) -> _Worker:
        # The package's own directory first, so the worker imports this very code.
        path = os.pathsep.join(filter(None, (_PACKAGE_ROOT, os.environ.get("PYTHONPATH"))))
        env = {**os.environ, "PYTHONPATH": path}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            parseworker.__name__,  # a module reference: it follows the worker if it moves
            language,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=PIPE_LIMIT,
        )
        return cls(process)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def ask(self, body: bytes, max_items: int | None) -> tuple[int, bytes]:
        """(status, payload); raises ConnectionError or IncompleteReadError if the worker is gone."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None  # both are pipes (`start`)
        stdin.write(REQUEST.pack(len(body), max_items or 0))
        stdin.write(body)
        await stdin.drain()
        status, length = ANSWER.unpack(await stdout.readexactly(ANSWER.size))
        return status, await stdout.readexactly(length)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def stop(self) -> None:
        """Close its stdin, so it ends by itself; kill it if it does not."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_WAIT)
        except TimeoutError:
            self.kill()
            await self.process.wait()


@dataclass(frozen=True, slots=True)
class Parsed:
    """An answer's videos, and the JSON lines they came from the worker in: an answer is stored
    as those lines (`search.answers`), so a video is encoded once, in the worker, not again on
    the loop."""

    videos: tuple[Video, ...]
    lines: bytes


class ParsePool:
    """`start` it on the loop that will use it, `close` it on the same loop."""

    def __init__(self, workers: int, language: str = "en") -> None:
        """`language`: a BCP 47 tag, for the terms each video carries (`terms.Terms`)."""
        self.workers = workers
        self.language = language
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: list[_Worker] = []
        self._exchanges: set[asyncio.Task[bytes]] = set()
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._terms = Terms(language)  # for parsing in a thread (parse_workers = 0)

    async def start(self) -> None:
        if self.workers <= 0:
            self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="parse")
            return
        for _ in range(self.workers):  # each imports the parsers now, not on the first user's search
            worker = await _Worker.start(self.language)
            self._all.append(worker)
            self._idle.put_nowait(worker)

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (for operators' tools, and the test that kills one)."""
        return [w.process.pid for w in self._all if w.alive]

    async def parse(self, body: bytes, max_items: int | None = None) -> Parsed:
        """The answer's videos. Raises ParseFailed for a body that is not RSS or Atom."""
        if self._thread is not None:
            loop = asyncio.get_running_loop()
            lines = await loop.run_in_executor(self._thread, parse_to_lines, body, max_items, self._terms)
        else:
            # Its own task, shielded: a caller that gives up must not leave a worker
            # half-way through an exchange, with an answer nobody reads in its pipe.
            exchange = asyncio.create_task(self._exchange(body, max_items))
            self._exchanges.add(exchange)
            exchange.add_done_callback(self._exchanges.discard)
            lines = await asyncio.shield(exchange)
        return Parsed(tuple(await in_turns(lines.split(b"\n") if lines else [], Video.from_line)), lines)

    async def _exchange(self, body: bytes, max_items: int | None) -> bytes:
        worker = await self._idle.get()
        try:
            for _ in range(2):
                if not worker.alive:
                    worker = await self._replace(worker)
                try:
                    status, payload = await worker.ask(body, max_items)
                except (ConnectionError, asyncio.IncompleteReadError):
                    log.error("a parse worker died: starting a new one")
                    worker.kill()
                    await worker.process.wait()
                    continue
                if status == FAILED:
                    raise ParseFailed(payload.decode("ascii", "replace"))
                return payload
            raise WorkerLost("parse workers died twice on one answer")
        finally:
            self._idle.put_nowait(worker)  # dead or alive: a dead one is replaced when next taken

    async def _replace(self, dead: _Worker) -> _Worker:
        """A new worker in `dead`'s place; OSError (no processes or descriptors left) leaves it there."""
        fresh = await _Worker.start(self.language)
        self._all = [fresh if w is dead else w for w in self._all]
        return fresh

    async def close(self) -> None:
        """Stop every worker and wait for them (or stop the thread)."""
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)
            return
        for exchange in list(self._exchanges):
            exchange.cancel()
        await asyncio.gather(*self._exchanges, return_exceptions=True)
        await asyncio.gather(*(w.stop() for w in self._all), return_exceptions=True)
        self._all = []
