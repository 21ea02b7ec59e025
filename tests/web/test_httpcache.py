"""Conditional GETs (web.httpcache) in every date form RFC 9110 says a recipient must accept."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest


@pytest.mark.parametrize(
    "form", ["%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
)
async def test_if_modified_since_in_each_http_date_form_gets_a_304(client, form) -> None:
    """IMF-fixdate, the obsolete RFC 850 form and asctime (which carries no zone: it is GMT);
    asctime was ignored before, so a client using it downloaded every poll in full."""
    first = await client.get("/search.atom", params={"q": "onboarding"})
    modified = parsedate_to_datetime(first.headers["Last-Modified"])
    again = await client.get(
        "/search.atom", params={"q": "onboarding"}, headers={"If-Modified-Since": modified.strftime(form)}
    )
    assert again.status == 304
    assert again.headers["Last-Modified"] == first.headers["Last-Modified"]
