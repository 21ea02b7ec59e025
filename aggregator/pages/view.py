"""What a page shows: the search's answer seen by one caller, through one format, as a `View`."""

from __future__ import annotations

from aggregator.caller import Caller
from aggregator.config import Config
from aggregator.params import SearchParams
from aggregator.render.formats import BY_NAME, HTML, Format
from aggregator.render.links import link_key
from aggregator.render.paging import facets, filtered, page_of
from aggregator.render.presentation import View
from aggregator.search import thumbnails
from aggregator.search.searcher import SearchAnswer


def view_of(
    config: Config, fmt: Format, variant: str, caller: Caller, params: SearchParams, answer: SearchAnswer
) -> View:
    """The page of results the parameters ask for, with the links, names and scope the caller may see."""
    extra = (("key", caller.key_param),) if caller.key_param else ()
    kept, left_out = filtered(params, answer.results)
    return View(
        facets=facets(params, answer.results) if fmt is HTML else None,
        page=page_of(params, kept),
        unknown_length_left_out=left_out,
        base_url=config.server.public_url,
        org_names={o.id: o.name for o in config.orgs},
        all_orgs=caller.visible_orgs,
        formats=BY_NAME,
        short_name=config.description.short_name,
        language=config.description.language,
        reports=answer.reports,
        variant=variant,
        extra=extra,
        thumbnail_query=thumbnails.scope_query(thumbnails.scope_secret(config), caller.visible_orgs),
        hub=config.server.websub_hub if caller.client is None else None,
        link_key=link_key(config) if variant == "embed" else None,
    )
