"""Suggestions (search.suggestions): titles only to callers who see one of their orgs, past queries
only once enough different callers made them, and never the one through the other."""

from __future__ import annotations

from aggregator.search.suggestions import SuggestionIndex
from tests.conftest import FakeClock


def test_a_query_never_inherits_a_title_of_an_org_the_caller_cannot_see() -> None:
    """An all-orgs client's search taught the index a title of `med`. A client limited to `eng`
    searching the same words in upper case (found in `eng` too) must not unlock that title: before,
    the query merged into the title's entry, took its "title" flag and gave it `eng`."""
    index = SuggestionIndex(min_callers=3, clock=FakeClock())
    index.add_title("Resident Induction Week", ["med"])
    index.add_query("RESIDENT INDUCTION WEEK", ["eng"], caller="eng-client")
    assert index.suggest("resident", ["eng"]) == []
    assert index.suggest("resident", ["med"]) == ["Resident Induction Week"]


def test_a_past_query_is_offered_once_enough_callers_made_it_and_only_once() -> None:
    index = SuggestionIndex(min_callers=3, clock=FakeClock())
    index.add_title("Lab safety", ["eng"])
    for n, caller in enumerate(["a", "b", "c"]):
        assert index.suggest("lab s", ["eng"]) == ["Lab safety"]  # the title, never twice
        index.add_query("lab safety", ["eng"], caller=caller)
        if n < 2:
            assert "lab safety" not in index.suggest("lab", ["eng"])
    assert index.suggest("lab s", ["eng"]) == ["Lab safety"]  # the query's words, offered once
    index.add_query("lab safety induction", ["eng"], caller="a")
    assert index.suggest("lab", ["hr"]) == []  # nothing of an org the caller cannot see
