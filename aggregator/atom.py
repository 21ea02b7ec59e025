"""The Atom feed (RFC 4287), with Media RSS, OpenSearch 1.1 and RFC 5005 paging links."""

from __future__ import annotations

from aggregator.feeds import new_feed
from aggregator.presentation import View


def render_atom(view: View) -> bytes:
    body: bytes = new_feed(view, "atom").atom_str(pretty=True)
    return body
