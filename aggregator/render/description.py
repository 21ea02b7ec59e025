"""The OpenSearch 1.1 description document (/opensearch.xml) and the Windows connector (.osdx).

Every URL a client needs is a `Url` template, absolute from `public_url`, so a
browser, SharePoint or Windows can be pointed at this one document.
"""

from __future__ import annotations

from lxml import etree

from aggregator import PRODUCT
from aggregator.config import Config
from aggregator.render.formats import FORMATS, HTML, RSS

OPENSEARCH_NS = "http://a9.com/-/spec/opensearch/1.1/"
PAGING = "count={count?}&startIndex={startIndex?}"
# Our own optional parameters, in a namespace of ours as OpenSearch 1.1 asks of extensions.
ILOS_NS = "urn:ilos-aggregator:opensearch-parameters"
FILTERS = "duration={ilos:duration?}&after={ilos:after?}"


def _document() -> etree._Element:
    """An empty OpenSearchDescription in the OpenSearch 1.1 namespace, as the default namespace."""
    # None is lxml's key for the default namespace; lxml-stubs do not allow it.
    nsmap: dict[str | None, str] = {None: OPENSEARCH_NS, "ilos": ILOS_NS}
    return etree.Element(f"{{{OPENSEARCH_NS}}}OpenSearchDescription", nsmap=nsmap)  # type: ignore[arg-type]


def render_description(config: Config) -> bytes:
    base = config.server.public_url
    d = config.description
    root = _document()

    def add(tag: str, text: str | None = None, **attrs: str) -> None:
        el = etree.SubElement(root, f"{{{OPENSEARCH_NS}}}{tag}", attrs)
        if text is not None:
            el.text = text

    add("ShortName", d.short_name)
    add("LongName", d.long_name)
    add("Description", d.description)
    add("Tags", d.tags)
    if d.contact:
        add("Contact", d.contact)
    for fmt in FORMATS:
        if fmt.rel == "self":
            add("Url", type=fmt.media_type, rel="self", template=f"{base}{fmt.path}")
            continue
        template = f"{base}{fmt.path}?q={{searchTerms}}" + (f"&{PAGING}&{FILTERS}" if fmt.paged else "")
        # No `method`: OpenSearch 1.1 has no such Url attribute (validators flag it); GET is the default.
        add("Url", type=fmt.media_type, rel=fmt.rel, template=template)
    add("Image", f"{base}/icon-16.png", height="16", width="16", type="image/png")
    add("Image", f"{base}/icon-64.png", height="64", width="64", type="image/png")
    add("Query", role="example", searchTerms=d.example_query)
    add("Developer", PRODUCT)
    add("SyndicationRight", "limited")
    add("AdultContent", "false")
    add("Language", "*")
    add("InputEncoding", "UTF-8")
    add("OutputEncoding", "UTF-8")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def render_osdx(config: Config) -> bytes:
    """A Windows federated search connector: an OpenSearch description Windows opens from a file.

    Windows wants RSS (or Atom) results and a `text/html` template for "open
    in browser"; it shows `media:thumbnail` beside each result.
    """
    base = config.server.public_url
    d = config.description
    root = _document()
    etree.SubElement(root, f"{{{OPENSEARCH_NS}}}ShortName").text = d.short_name
    etree.SubElement(root, f"{{{OPENSEARCH_NS}}}Description").text = d.description
    etree.SubElement(
        root,
        f"{{{OPENSEARCH_NS}}}Url",
        type=RSS.media_type,
        template=f"{base}{RSS.path}?q={{searchTerms}}&{PAGING}",
    )
    etree.SubElement(
        root, f"{{{OPENSEARCH_NS}}}Url", type=HTML.media_type, template=f"{base}{HTML.path}?q={{searchTerms}}"
    )
    etree.SubElement(root, f"{{{OPENSEARCH_NS}}}Query", role="example", searchTerms=d.example_query)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
