"""Who is calling, once `web.auth` has decided: the orgs it may see and the scope of its pages.

At the root because every layer that keeps something per caller needs it (the
subscriptions, the caller limits, the page cache), and it depends on nothing but
the config.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from aggregator.config import Client


@dataclass(frozen=True, slots=True)
class Caller:
    client: Client | None  # None: the service has no [[clients]], everyone may search
    visible_orgs: tuple[str, ...]  # in configuration order
    key_param: str | None = None  # the token, when it came as key=: links must carry it on

    @property
    def authenticated(self) -> bool:
        return self.client is not None

    @property
    def cache_scope(self) -> str:
        """Tells apart rendered pages that differ by caller: the orgs it sees, and a key= its links carry.

        Never the client's name: two clients that see the same orgs share pages,
        and no client ever gets a page rendered for a wider scope. A token that
        rides in links is digested, so pages with one caller's key are that caller's.
        """
        if self.client is None:
            return ""
        scope = ",".join(self.visible_orgs)
        if self.key_param:
            scope += "|" + hashlib.sha256(self.key_param.encode()).hexdigest()[:24]
        return scope
