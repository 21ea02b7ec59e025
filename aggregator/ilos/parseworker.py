"""One parse worker: a process that reads search answers on stdin and writes videos on stdout.

    python -m aggregator.ilos.parseworker LANGUAGE   (started by `parsepool.ParsePool`, not by hand)

It answers one request at a time, in order, until stdin ends. The exchange,
all integers big-endian:

- request: body length (8 bytes), `max_items` (4 bytes, 0 for none), the body;
- answer: status (1 byte: 0 parsed, 1 not parsed), payload length (8 bytes),
  the payload: one JSON line per video (`Video.to_line`), or for status 1 the
  name of the exception (never its text: it could quote the body).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import struct
import sys
from dataclasses import replace
from typing import BinaryIO

from aggregator.ilos.parsing import parse_search_answer
from aggregator.model import Video
from aggregator.terms import Terms

REQUEST = struct.Struct(">QI")
ANSWER = struct.Struct(">BQ")
PARSED, FAILED = 0, 1
PARSE_NICENESS = 10  # workers yield a shared core to the serving loop
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def parse_to_lines(body: bytes, max_items: int | None, terms: Terms | None = None) -> bytes:
    """Parse, and give back one JSON line per video: one bytes object, read by the loop in turns.

    With `terms`, each video carries the terms ranking compares (tokenising 500 videos is tens of
    milliseconds: here, off the loop, with the parse)."""
    videos = parse_search_answer(body, max_items)
    if terms is not None:
        videos = [with_terms(v, terms) for v in videos]
    return b"\n".join(v.to_line() for v in videos)


def with_terms(video: Video, terms: Terms) -> Video:
    fields = (video.title, video.summary, video.author or "")
    return replace(video, terms=tuple(" ".join(terms.of(text)) for text in fields))  # type: ignore[arg-type]


def serve(requests: BinaryIO, answers: BinaryIO, terms: Terms | None = None) -> None:
    """Answer requests until `requests` ends."""
    while True:
        head = requests.read(REQUEST.size)
        if len(head) < REQUEST.size:
            return  # the service closed the pipe (or is gone): nothing more to do
        length, max_items = REQUEST.unpack(head)
        body = requests.read(length)
        if len(body) < length:
            return
        try:
            status, payload = PARSED, parse_to_lines(body, max_items or None, terms)
        except Exception as exc:  # UnparseableAnswer, or anything feedparser trips on
            status, payload = FAILED, type(exc).__name__.encode()
        answers.write(ANSWER.pack(status, len(payload)))
        answers.write(payload)
        answers.flush()


def main() -> None:
    """Set the process up (priority, lifetime, signals, a clean stdout), then serve."""
    with contextlib.suppress(OSError):
        # Parsing is bulk work and the event loop is latency: on a busy machine the
        # kernel should run the loop first (CFS weights).
        os.nice(PARSE_NICENESS)
    _die_with_parent()
    # Ctrl-C reaches the whole process group; the service stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt an answer
    language = sys.argv[1] if len(sys.argv) > 1 else ""
    serve(sys.stdin.buffer, answers, Terms(language) if language else None)


def _die_with_parent() -> None:
    """End when the process that started it ends, however it ends.

    A serving process killed outright (SIGKILL, the OOM killer) cannot stop its
    workers; on Linux the kernel then sends them SIGTERM (PR_SET_PDEATHSIG), so
    none is left behind holding memory. (Its stdin ending would also end it, but
    only once it reads again.)
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent was already gone before prctl took effect
        os._exit(0)


if __name__ == "__main__":
    main()
