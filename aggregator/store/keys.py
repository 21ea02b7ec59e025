"""Every shared key is built here: namespaced, versioned, and made of ids, randtags and digests
of queries, never of an org key or a client token.

Any change to the shape of a stored value or a key bumps `NAMESPACE`, so replicas of two
versions running side by side during a rollout never misread each other's records.
"""

from __future__ import annotations

import hashlib

NAMESPACE = "ilosagg:v5"  # v5: answers keep the parse worker's lines; v4: videos carry their terms; v3: answers as JSON lines; v2: duration_pending


def key(kind: str, *parts: str) -> str:
    return ":".join((NAMESPACE, kind, *parts))


def query_digest(text: str) -> str:
    """A short stable digest, so user text never becomes a raw key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
