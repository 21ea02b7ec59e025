"""How often a caller may search (contract: "A caller over its limit gets 429").

Each `[[clients]]` token may make `rate_limit` requests a minute; callers
without a token are limited per address by `server.anonymous_rate_limit`
(0, the default, is off: behind a reverse proxy every caller shares one
address). The address comes from `X-Forwarded-For` only when the request
arrives from one of `server.trusted_proxies`. Every search format and
`/suggest` count, cached answers included; the counts are shared through
Redis like the upstream budget, with the same per-process fallback.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Iterable

from limits import RateLimitItemPerMinute

from aggregator.caller import Caller
from aggregator.config import Config
from aggregator.store.limiter import Limiter

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class CallerLimits:
    def __init__(self, config: Config, limiter: Limiter) -> None:
        self.limiter = limiter
        share = config.server.replicas_hint * config.server.workers
        self._clients = {
            c.name: (
                RateLimitItemPerMinute(c.rate_limit),
                RateLimitItemPerMinute(max(1, c.rate_limit // share)),
            )
            for c in config.clients
        }
        anonymous = config.server.anonymous_rate_limit
        self._anonymous = (
            (RateLimitItemPerMinute(anonymous), RateLimitItemPerMinute(max(1, anonymous // share)))
            if anonymous
            else None
        )
        self._proxies = tuple(ipaddress.ip_network(p, strict=False) for p in config.server.trusted_proxies)

    @property
    def active(self) -> bool:
        """False for an open service without an anonymous limit: nothing to count, nothing awaited."""
        return bool(self._clients) or self._anonymous is not None

    def identity(self, caller: Caller, remote: str | None, forwarded_for: str | None) -> str:
        """Who is asking, for counting distinct callers: a client's name, or a digest of the address."""
        if caller.client is not None:
            return "client:" + caller.client.name
        address = client_address(remote, forwarded_for, self._proxies)
        return "addr:" + hashlib.sha256(address.encode()).hexdigest()[:20]

    async def admit(self, caller: Caller, remote: str | None, forwarded_for: str | None) -> float | None:
        """None when the caller may go on; else the seconds after which it may try again."""
        if caller.client is not None:
            item, local = self._clients[caller.client.name]
            ident = "caller/client/" + hashlib.sha256(caller.client.name.encode()).hexdigest()[:20]
        elif self._anonymous is not None:
            item, local = self._anonymous
            address = client_address(remote, forwarded_for, self._proxies)
            ident = "caller/addr/" + hashlib.sha256(address.encode()).hexdigest()[:20]
        else:
            return None
        if await self.limiter.hit(item, local, ident):
            return None
        _, _, reset = await self.limiter.remaining(item, local, ident)
        return float(max(1, math.ceil(reset - time.time())))


def client_address(remote: str | None, forwarded_for: str | None, proxies: Iterable[IPNetwork]) -> str:
    """The caller's address: X-Forwarded-For's last hop that is not a trusted proxy, if the peer is one."""
    proxies = tuple(proxies)

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in proxies)

    address = remote or "unknown"
    if not forwarded_for or not trusted(address):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",")][:32]):
        if not hop:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a forged or broken header: count the proxy itself
        if not trusted(hop):
            return hop
        address = hop
    return address
