"""The human search page at `/` (and its compact layout at `/embed`), and what protects it.

Rendered server-side from templates/search.html with autoescaping; the page
runs no script at all, and its Content-Security-Policy says so, so nothing
from upstream can run in a reader's browser or in the intranet that frames it.
The compact layout runs one file of ours, templates/embed.js, which keeps it
usable in a sandboxed frame; its policy names that file and nothing else.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

import jinja2
from markupsafe import Markup, escape

from aggregator import PRODUCT, __version__
from aggregator.loop.turns import in_turns
from aggregator.model import Sort, format_duration
from aggregator.render.presentation import View
from aggregator.resources import template
from aggregator.terms import Terms, marked_spans

MEDIA_TYPE = "text/html"
STYLESHEET = template("search.css").read_bytes()
EMBED_SCRIPT = template("embed.js").read_bytes()  # the compact layout's, for sandboxed frames
EMBED_SCRIPT_PATH = "/static/embed.js"


def _environment() -> jinja2.Environment:
    sources = {name: template(name).read_text(encoding="utf-8") for name in ("search.html", "status.html")}
    env = jinja2.Environment(
        loader=jinja2.DictLoader(sources),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = format_duration
    env.filters["marked"] = _marked
    return env


def _marked(title: str, view: View) -> Markup:
    """The title with the words the query matched in `<mark>`: each piece escaped first, the
    pieces found in the original text (`terms.marked_spans`), whatever folding does to lengths."""
    if view.page.params.sort is not Sort.RELEVANCE:  # a newest-first page is as it was
        return escape(title)
    wanted = frozenset(_terms(view.language).of(view.page.params.q))
    return Markup("").join(
        Markup("<mark>{}</mark>").format(piece) if matched else escape(piece)
        for piece, matched in marked_spans(title, wanted, _terms(view.language))
    )


@functools.lru_cache(maxsize=8)
def _terms(language: str) -> Terms:
    return Terms(language)


_ENV = _environment()
_TEMPLATE = _ENV.get_template("search.html")
_STATUS = _ENV.get_template("status.html")


def render_status(**values: object) -> str:
    """The operators' page (/status): see web.status for what it is given."""
    return _STATUS.render({"version": __version__, "product": PRODUCT, **values})


async def render_page(view: View) -> bytes:
    """A page of results (the registry's renderer for `html`).

    Written in turns of the loop: 100 cards take ~6 ms on a slow machine.
    """
    context = _context(
        base_url=view.base_url,
        short_name=view.short_name,
        language=view.language,
        q=view.page.params.q,
        view=view,
        troubled=view.troubled,
        embed=view.variant == "embed",
        sort=view.page.params.sort,
    )
    return "".join(await in_turns(_TEMPLATE.generate(context), str)).encode()


def render_form(
    base_url: str,
    short_name: str,
    *,
    q: str = "",
    error: str | None = None,
    embed: bool = False,
    language: str = "en",
) -> str:
    """The page without results: the empty search form, or a search that could not be run."""
    return _render(base_url=base_url, short_name=short_name, q=q, error=error, embed=embed, language=language)


def _render(**values: object) -> str:
    return _TEMPLATE.render(_context(**values))


def _context(**values: object) -> dict[str, object]:
    context: dict[str, object] = {
        "q": "",
        "error": None,
        "view": None,
        "troubled": [],
        "embed": False,
        "sort": "relevance",
        "version": __version__,
        "product": PRODUCT,
        "language": "en",
    }
    context.update(values)
    return context


def security_headers(
    public_url: str, frame_ancestors: tuple[str, ...], *, embed: bool = False
) -> dict[str, str]:
    """Nothing from upstream may run on the page: styles from us only, and no script at all but
    the compact layout's own file (named by its URL: a frame's sandbox makes 'self' unreliable).

    Thumbnails redirect to upstream's image hosts, which are not known in
    advance, hence images from any http(s) origin.
    """
    base = urlsplit(public_url)
    script = f"script-src {public_url}{EMBED_SCRIPT_PATH}; " if embed else ""
    csp = (
        f"default-src 'none'; {script}img-src 'self' https: http: data:; style-src 'self'; "
        f"form-action 'self' {base.scheme}://{base.netloc}; base-uri 'none'; "
        f"frame-ancestors {' '.join(frame_ancestors)}"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    }
