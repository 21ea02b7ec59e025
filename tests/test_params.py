"""Search parameters (params): every bad value is a 400 that names the parameter."""

from __future__ import annotations

import pytest

from aggregator.params import ParamError, parse_search_params

ORGS = ("engineering", "medicine", "hr")


@pytest.mark.parametrize("value", [",", " , ,", ",,,"])
def test_a_list_of_no_organisations_is_refused(value: str) -> None:
    """`org=,` was a 200 that searched nothing and described itself as "in "."""
    with pytest.raises(ParamError) as caught:
        parse_search_params({"q": "x", "org": value}, ORGS)
    assert caught.value.param == "org"


def test_an_empty_org_is_absent_and_a_list_is_kept_in_configuration_order() -> None:
    assert parse_search_params({"q": "x", "org": ""}, ORGS).orgs == ORGS
    assert parse_search_params({"q": "x", "org": "hr, engineering,"}, ORGS).orgs == ("engineering", "hr")


async def test_org_comma_is_a_400_naming_org_in_the_clients_format(client) -> None:
    resp = await client.get("/search.json", params={"q": "onboarding", "org": ","})
    assert resp.status == 400 and (await resp.json())["parameter"] == "org"
