"""The Atom feed (RFC 4287), with Media RSS, OpenSearch 1.1 and RFC 5005 paging links."""

from __future__ import annotations

from aggregator.feeds import ATOM_TYPE, new_feed
from aggregator.presentation import View


def render_atom(view: View) -> bytes:
    return new_feed(view, "atom", ATOM_TYPE).atom_str(pretty=True)
