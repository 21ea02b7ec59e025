"""Render every format once before serving.

A first render imports feedgen's extensions and compiles templates: ~40 ms
that would otherwise hold the loop during the first user's request.
"""

from __future__ import annotations

from aggregator.config import Config
from aggregator.model import Result, Sort, Video
from aggregator.params import SearchParams
from aggregator.render.formats import BY_NAME, FORMATS
from aggregator.render.paging import page_of
from aggregator.render.presentation import View


async def warm_up_renderers(config: Config) -> None:
    orgs = tuple(o.id for o in config.orgs)
    video = Video("warmup0000", "Warm-up", "https://example.invalid/v", "https://example.invalid/e")
    params = SearchParams("warm up", 20, 1, Sort.RELEVANCE, orgs)
    view = View(
        page=page_of(params, (Result(video, orgs[:1], 1.0),)),
        base_url=config.server.public_url,
        org_names={o.id: o.name for o in config.orgs},
        all_orgs=orgs,
        formats=BY_NAME,
    )
    for fmt in FORMATS:
        if fmt.render is not None:
            await fmt.render(view)
