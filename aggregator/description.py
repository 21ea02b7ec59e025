"""The OpenSearch 1.1 description document at /opensearch.xml.

Every URL a client needs is a `Url` template, absolute from `public_url`, so a
browser, SharePoint or Windows can be pointed at this one document.
"""

from __future__ import annotations

from lxml import etree

from aggregator import PRODUCT
from aggregator.atom import ATOM_TYPE, DESCRIPTION_TYPE

OPENSEARCH_NS = "http://a9.com/-/spec/opensearch/1.1/"
PAGING = "count={count?}&startIndex={startIndex?}"

# (media type, path, rel) for each result format the service speaks.
TEMPLATES: tuple[tuple[str, str, str | None], ...] = (
    ("text/html", "/", "results"),
    (ATOM_TYPE, "/search.atom", "results"),
)


def render_description(base_url: str, *, short_name: str = "ilos videos",
                       description: str = "Search the videos of every ilos organisation at once.",
                       example: str = "onboarding") -> bytes:
    root = etree.Element(f"{{{OPENSEARCH_NS}}}OpenSearchDescription", nsmap={None: OPENSEARCH_NS})

    def add(tag: str, text: str | None = None, **attrs: str) -> etree._Element:
        el = etree.SubElement(root, f"{{{OPENSEARCH_NS}}}{tag}", {k: v for k, v in attrs.items()})
        if text is not None:
            el.text = text
        return el

    add("ShortName", short_name[:16])
    add("Description", description[:1024])
    for media_type, path, rel in TEMPLATES:
        attrs = {"type": media_type, "method": "get",
                 "template": f"{base_url}{path}?q={{searchTerms}}&{PAGING}"}
        if rel:
            attrs["rel"] = rel
        add("Url", **attrs)
    add("Url", type=DESCRIPTION_TYPE, rel="self", template=f"{base_url}/opensearch.xml")
    add("Query", role="example", searchTerms=example)
    add("Image", f"{base_url}/icon-16.png", height="16", width="16", type="image/png")
    add("Image", f"{base_url}/icon-64.png", height="64", width="64", type="image/png")
    add("InputEncoding", "UTF-8")
    add("OutputEncoding", "UTF-8")
    add("Developer", PRODUCT)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
