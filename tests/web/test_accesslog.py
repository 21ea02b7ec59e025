"""The access log (web.accesslog): client tokens and webhook secrets never reach it, however spelled."""

from __future__ import annotations

import pytest

from aggregator.web.accesslog import redact

SECRET = "s3cret-webhook-0123456789"


@pytest.mark.parametrize(
    "path",
    [
        f"/hooks/ilos/eng/{SECRET}",
        f"/hooks/ilos/eng/{SECRET}/",  # a trailing slash
        f"//hooks/ilos/eng/{SECRET}",  # a doubled slash, merged by the router
        f"/%68ooks/ilos/eng/{SECRET}",  # a percent-escaped letter, decoded by the router (202)
        f"/hooks/ilos/eng/{SECRET}/x",  # more segments
        f"/hooks/ilos//eng/{SECRET}?a=b",
        f"/hooks/ilos/eng/{SECRET[:6]}%2D{SECRET[7:]}",  # an escaped character inside the secret
    ],
)
def test_no_spelling_of_a_webhook_path_logs_its_secret(path: str) -> None:
    logged = redact(path)
    assert SECRET not in logged and SECRET[7:] not in logged, logged
    assert "/hooks/ilos/eng/REDACTED" in logged


@pytest.mark.parametrize(
    "query",
    [
        "key=T0KEN-abcdefghijklmnop",
        "key[]=T0KEN-abcdefghijklmnop",
        "key%5B%5D=T0KEN-abcdefghijklmnop",
        "k%65y=T0KEN-abcdefghijklmnop",
        "q=x&KEY[0]=T0KEN-abcdefghijklmnop",
    ],
)
def test_a_token_in_any_spelling_of_key_is_redacted(query: str) -> None:
    logged = redact(f"/search.atom?{query}")
    assert "T0KEN" not in logged and "REDACTED" in logged


def test_ordinary_paths_are_left_as_they_are() -> None:
    assert redact("/search.atom?q=keyboard+shortcuts&count=5") == "/search.atom?q=keyboard+shortcuts&count=5"
    assert redact("/search.atom?q=caf%C3%A9") == "/search.atom?q=caf%C3%A9"
