"""HTTP calls to ilos: the per-organisation search and the per-video metadata.

Every call ends in one `Fetched` whose `outcome` says what happened; nothing
here raises for an upstream problem. Org keys travel only in the request to
that org's own base URL: redirects are not followed (a 307 would re-post the
key to wherever it points), and no URL, exception text or body is ever put in
`detail`, which is safe to log and show.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from aggregator import USER_AGENT
from aggregator.config import Org, UpstreamConfig
from aggregator.model import sane_duration

METADATA_MAX_BYTES = 64 * 1024


class Outcome(enum.Enum):
    OK = "ok"
    TIMEOUT = "timeout"
    DENIED = "denied"  # 401 or 403: the key is wrong or revoked
    RATE_LIMITED = "rate-limited"  # 429
    HTTP_ERROR = "http-error"  # any other non-200 status
    TOO_LARGE = "too-large"
    UNPARSEABLE = "unparseable"
    NETWORK = "network"  # refused, reset, DNS


@dataclass(frozen=True, slots=True)
class Fetched:
    outcome: Outcome
    elapsed_ms: float
    body: bytes = b""
    status: int | None = None
    retry_after: float | None = None  # seconds, from a 429's Retry-After
    detail: str = ""  # safe to log: never a URL, a key or upstream text
    rate_remaining: int | None = None  # X-RateLimit-Remaining, where ilos sent one

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True, slots=True)
class DurationAnswer:
    outcome: Outcome
    duration_ms: int | None
    elapsed_ms: float
    detail: str = ""
    retry_after: float | None = None
    rate_remaining: int | None = None


UPSTREAM_CONNECTIONS = 512  # open connections to ilos per process, at most


def new_session() -> aiohttp.ClientSession:
    """The app's one client session; per-request timeouts are passed on each call."""
    return aiohttp.ClientSession(
        headers={"User-Agent": USER_AGENT},
        connector=aiohttp.TCPConnector(
            limit=UPSTREAM_CONNECTIONS, limit_per_host=UPSTREAM_CONNECTIONS // 2, ttl_dns_cache=300
        ),
        # No cookies: nothing from one org's answers may ride along to another's.
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
    )


async def fetch_search(
    session: aiohttp.ClientSession, org: Org, query: str, upstream: UpstreamConfig
) -> Fetched:
    url = org.base_url + upstream.search_path
    params = {"q": query, "api_key": org.api_key}
    return await _request(session, "GET", url, upstream, upstream.max_body_bytes, params=params)


async def fetch_duration(
    session: aiohttp.ClientSession, org: Org, randtag: str, upstream: UpstreamConfig
) -> DurationAnswer:
    url = org.base_url + upstream.metadata_path
    fetched = await _request(
        session,
        "POST",
        url,
        upstream,
        METADATA_MAX_BYTES,
        json_body={"api_key": org.api_key, "randtag": randtag},
    )
    if not fetched.ok:
        return DurationAnswer(
            fetched.outcome,
            None,
            fetched.elapsed_ms,
            fetched.detail,
            fetched.retry_after,
            fetched.rate_remaining,
        )
    duration_ms, detail = parse_metadata_answer(fetched.body)
    outcome = Outcome.OK if duration_ms is not None else Outcome.UNPARSEABLE
    return DurationAnswer(outcome, duration_ms, fetched.elapsed_ms, detail, None, fetched.rate_remaining)


def parse_metadata_answer(body: bytes) -> tuple[int | None, str]:
    """The documented envelope: `{"level": "success", "data": {"totalMs": 910380, ...}}`.

    `totalMs` is a number; the other fields are strings. Failures are believed
    to come as another `level` with a `message`, which is not echoed (it is
    upstream text).
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, "metadata answer is not JSON"
    if not isinstance(doc, dict):
        return None, "metadata answer is not an object"
    if doc.get("level") != "success":
        return None, "metadata answer has level other than success"
    data = doc.get("data")
    if not isinstance(data, dict):
        return None, "metadata answer has no data"
    total = data.get("totalMs")
    if isinstance(total, (int, float)) and not isinstance(total, bool):
        duration = sane_duration(total)
        return (duration, "") if duration is not None else (None, "metadata answer has an absurd duration")
    try:
        # Short digit strings only: int() of thousands of digits is slow, and no video is that long.
        fields = [str(data[k]).strip() for k in ("hours", "mins", "secs")] + [
            str(data.get("ms", "0") or "0").strip()
        ]
    except KeyError:
        return None, "metadata answer has no usable duration"
    if not all(f.isascii() and f.isdigit() and len(f) <= 6 for f in fields):
        return None, "metadata answer has no usable duration"
    hours, mins, secs, ms = (int(f) for f in fields)
    duration = sane_duration(((hours * 60 + mins) * 60 + secs) * 1000 + ms)
    return (duration, "") if duration is not None else (None, "metadata answer has an absurd duration")


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    upstream: UpstreamConfig,
    max_bytes: int,
    params: dict[str, str] | None = None,
    json_body: dict[str, str] | None = None,
) -> Fetched:
    started = time.perf_counter()
    remaining: int | None = None  # what ilos says is left of this key's budget

    def done(
        outcome: Outcome,
        *,
        status: int | None = None,
        body: bytes = b"",
        retry_after: float | None = None,
        detail: str = "",
    ) -> Fetched:
        elapsed = (time.perf_counter() - started) * 1000
        return Fetched(
            outcome,
            elapsed,
            body=body,
            status=status,
            retry_after=retry_after,
            detail=detail,
            rate_remaining=remaining,
        )

    try:
        async with session.request(
            method,
            url,
            params=params,
            json=json_body,
            timeout=aiohttp.ClientTimeout(total=upstream.timeout),
            allow_redirects=False,
        ) as resp:
            status = resp.status
            remaining = parse_remaining(resp.headers.get("X-RateLimit-Remaining"))
            if status in (401, 403):
                return done(Outcome.DENIED, status=status, detail=f"HTTP {status}")
            if status == 429:
                retry = parse_retry_after(resp.headers.get("Retry-After"))
                return done(Outcome.RATE_LIMITED, status=status, retry_after=retry, detail="HTTP 429")
            if status != 200:
                return done(Outcome.HTTP_ERROR, status=status, detail=f"HTTP {status}")
            if resp.content_length is not None and resp.content_length > max_bytes:
                return done(Outcome.TOO_LARGE, status=status, detail=f"body over {max_bytes} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    return done(Outcome.TOO_LARGE, status=status, detail=f"body over {max_bytes} bytes")
                chunks.append(chunk)
            return done(Outcome.OK, status=status, body=b"".join(chunks))
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return done(Outcome.TIMEOUT, detail=f"no answer within {upstream.timeout:g}s")
    except aiohttp.ClientError as exc:
        # The exception's text can contain the request URL, and so the key.
        return done(Outcome.NETWORK, detail=type(exc).__name__)


def parse_remaining(value: str | None) -> int | None:
    """`X-RateLimit-Remaining`: a small whole number, or nothing we believe."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """RFC 9110 10.2.3: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 86_400))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, min(delta, 86_400.0))
