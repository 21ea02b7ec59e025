"""feedgen extensions for what feedgen does not write itself.

OpenSearch 1.1 response elements (`totalResults`, `startIndex`,
`itemsPerPage`, `Query role="request"`) for Atom and RSS channels, in the
namespace http://a9.com/-/spec/opensearch/1.1/ exactly (SharePoint and Windows
federated search match it literally).
"""

from __future__ import annotations

from feedgen.ext.base import BaseExtension
from feedgen.util import xml_elem

OPENSEARCH_NS = "http://a9.com/-/spec/opensearch/1.1/"
ATOM_NS = "http://www.w3.org/2005/Atom"


class OpenSearchExtension(BaseExtension):
    def __init__(self) -> None:
        self._response: dict[str, object] | None = None

    def extend_ns(self) -> dict[str, str]:
        return {"opensearch": OPENSEARCH_NS}

    def response(self, *, total: int, start_index: int, items_per_page: int, search_terms: str,
                 count: int) -> None:
        self._response = dict(total=total, start_index=start_index, items_per_page=items_per_page,
                              search_terms=search_terms, count=count)

    def _write(self, parent) -> None:
        r = self._response
        if r is None:
            return
        for name, value in (("totalResults", r["total"]), ("startIndex", r["start_index"]),
                            ("itemsPerPage", r["items_per_page"])):
            xml_elem(f"{{{OPENSEARCH_NS}}}{name}", parent).text = str(value)
        xml_elem(f"{{{OPENSEARCH_NS}}}Query", parent, role="request",
                 searchTerms=str(r["search_terms"]), startIndex=str(r["start_index"]),
                 count=str(r["count"]))

    def extend_atom(self, feed):
        self._write(feed)
        return feed

    def extend_rss(self, rss):
        self._write(rss[0])  # the <channel>
        return rss


class OpenSearchEntryExtension(BaseExtension):
    """Entries carry nothing of OpenSearch; feedgen wants a class all the same."""
