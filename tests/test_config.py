"""Configuration: defaults, every problem at once by key path, and no secret ever echoed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.config import ConfigError, load_config, parse_config_text

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-org-key-DO-NOT-PRINT"


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, environ or {})
    return info.value.problems


def test_example_config_is_valid_with_its_env_vars() -> None:
    env = {"ILOS_KEY_ENGINEERING": SECRET, "ILOS_KEY_MEDICINE": "other-key"}
    config = load_config(ROOT / "config" / "aggregator.example.toml", env)
    assert [o.id for o in config.orgs] == ["engineering", "medicine"]
    assert config.orgs[0].api_key == SECRET
    assert config.orgs[0].base_url == "https://api.ilosvideos.com"
    assert config.upstream.metadata_path == "/video/metadata"
    assert config.server.public_url == "http://127.0.0.1:8080"
    assert config.cache.redis_url is None
    assert SECRET not in repr(config)


def test_defaults_and_overrides() -> None:
    config = parse_config_text(
        '[server]\nhost = "0.0.0.0"\nport = 9000\npublic_url = "https://videos.example.edu/"\n'
        '[upstream]\nbase_url = "https://api.vidgrid.com"\nmetadata_path = "/v1/video/metadata"\n'
        '[[orgs]]\nid = "a"\napi_key = "k1"\n'
        '[[orgs]]\nid = "b"\nname = "B"\napi_key = "k2"\nbase_url = "https://api.ilosvideos.com"\n',
        {},
    )
    assert config.server.public_url == "https://videos.example.edu"
    assert [o.base_url for o in config.orgs] == ["https://api.vidgrid.com", "https://api.ilosvideos.com"]
    assert [o.name for o in config.orgs] == ["a", "B"]  # the name defaults to the id
    assert config.upstream.timeout == 4.0 and config.cache.search_ttl == 300


def test_every_problem_is_reported_at_once_by_key_path() -> None:
    found = problems(
        '[upstream]\nbase_url = "ftp://x"\ntimeout = 0\n'
        '[[orgs]]\nid = "Eng X"\napi_key = "k"\n'
        '[[orgs]]\nid = "b"\napi_key = "env:MISSING_KEY"\n'
        '[[orgs]]\nid = "b"\napi_key = "k3"\ncolour = "blue"\n'
        '[[orgs]]\nid = "c"\nname = "C"\n'
    )
    assert found == [
        "upstream.base_url: must be an absolute http:// or https:// URL",
        "upstream.timeout: must be a number greater than 0 and at most 120",
        "orgs[0].id: must match [a-z0-9-]+ (at most 64 characters)",
        "orgs[1].api_key: environment variable MISSING_KEY is not set",
        "orgs[2].id: duplicate organisation id",
        "orgs[2].colour: unknown key",
        "orgs[3].api_key: is required",
    ]


def test_empty_org_list_and_bad_types() -> None:
    assert problems("[server]\nport = 99999\n") == [
        "server.port: must be a whole number from 0 to 65535",
        "orgs: at least one [[orgs]] table is required",
    ]
    assert problems('orgs = "engineering"\n') == ["orgs: must be an array of tables ([[orgs]])"]
    assert problems("[server\n")[0].startswith("TOML syntax:")


def test_clients_need_long_unique_tokens_and_known_orgs() -> None:
    found = problems(
        '[[orgs]]\nid = "a"\napi_key = "k"\n'
        '[[clients]]\nname = "sp"\ntoken = "short"\n'
        '[[clients]]\nname = "x"\ntoken = "a-long-enough-token-1"\norgs = ["nope"]\n'
        '[[clients]]\nname = "x"\ntoken = "a-long-enough-token-1"\n'
    )
    assert found == [
        "clients[0].token: must be at least 16 characters",
        "clients[1].orgs: names an organisation that is not configured",
        "clients[2].name: the same name is given to another client",
        "clients[2].token: the same token is given to another client",
        "server.signing_secret: is required with [[clients]]: it signs scoped thumbnail URLs (write it as env:NAME)",
    ]


def test_values_are_never_echoed() -> None:
    text = f'[cache]\nredis_url = "{SECRET}"\n[[orgs]]\nid = "{SECRET}"\napi_key = {{ x = "{SECRET}" }}\n'
    joined = "\n".join(problems(text, {"X": SECRET}))
    assert SECRET not in joined
    assert "cache.redis_url" in joined and "orgs[0].id" in joined and "orgs[0].api_key" in joined


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_check_config_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'[upstream]\ntimeout = -1\n[[orgs]]\nid = "UPPER"\napi_key = "{SECRET}"\n'
        '[[orgs]]\nid = "b"\napi_key = "env:NOT_SET_ANYWHERE"\n'
    )
    result = run_cli("check-config", "--config", str(bad), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "upstream.timeout: must be a number greater than 0 and at most 120",
        "orgs[0].id: must match [a-z0-9-]+ (at most 64 characters)",
        "orgs[1].api_key: environment variable NOT_SET_ANYWHERE is not set",
    ]
    assert SECRET not in result.stdout + result.stderr

    good = tmp_path / "good.toml"
    good.write_text('[[orgs]]\nid = "a"\napi_key = "env:K"\n')
    result = run_cli(
        "check-config", env={"PATH": "/usr/bin:/bin", "AGGREGATOR_CONFIG": str(good), "K": SECRET}
    )
    assert result.returncode == 0, result.stderr
    assert "1 organisations" in result.stdout and SECRET not in result.stdout

    missing = run_cli("serve", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_budget_keys_and_their_defaults() -> None:
    config = parse_config_text(
        '[server]\nsigning_secret = "0123456789abcdef"\n'
        '[upstream]\nrate_limit = 30\n[[orgs]]\nid = "a"\napi_key = "k1"\n'
        '[[orgs]]\nid = "b"\napi_key = "k2"\nrate_limit = 120\n'
        '[[clients]]\nname = "c"\ntoken = "0123456789abcdef"\n',
        {},
    )
    assert [o.rate_limit for o in config.orgs] == [30, 120]  # the org's own figure wins
    up = config.upstream
    assert (up.rate_window, up.search_reserve, up.deadline, up.duration_wait, up.max_items) == (
        60,
        0.25,
        5.0,
        0.3,
        500,
    )
    assert config.cache.incomplete_ttl == 15
    assert config.clients[0].rate_limit == 600
    assert (config.server.anonymous_rate_limit, config.server.trusted_proxies) == (0, ())
    found = problems(
        '[server]\ntrusted_proxies = ["not-an-address"]\n[upstream]\nsearch_reserve = 2\nrate_limit = 0\n'
        '[[orgs]]\nid = "a"\napi_key = "k"\n'
    )
    assert any(p.startswith("server.trusted_proxies:") for p in found)
    assert any(p.startswith("upstream.search_reserve:") for p in found)
    assert any(p.startswith("upstream.rate_limit:") for p in found)


def test_a_replaced_key_still_starts_with_a_deprecation_warning(tmp_path) -> None:
    path = tmp_path / "old.toml"
    path.write_text(
        '[cache]\nmemory_max_entries = 500\n[upstream]\nmetadata_concurrency = 4\n[[orgs]]\nid = "a"\napi_key = "k"\n'
    )
    config = load_config(path, {})
    assert [w.split(":")[0] for w in config.warnings] == [
        "cache.memory_max_entries",
        "upstream.metadata_concurrency",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "check-config", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0
    assert "warning: upstream.metadata_concurrency: deprecated" in done.stderr


def test_a_config_that_leaves_every_key_out_gets_each_documented_default() -> None:
    """The defaults a file falls back to are the dataclasses' own: written once, read the same."""
    from dataclasses import replace

    from aggregator.config import (
        CacheConfig,
        DescriptionConfig,
        ServerConfig,
        SuggestConfig,
        UpstreamConfig,
        WebConfig,
    )

    config = parse_config_text(
        '[[orgs]]\nid = "a"\napi_key = "k"\n\n[[clients]]\nname = "c"\ntoken = "'
        + "t" * 16
        + '"\n[server]\nsigning_secret = "'
        + "s" * 16
        + '"\n'
    )
    assert config.server == replace(
        ServerConfig(), public_url="http://127.0.0.1:8080", signing_secret="s" * 16
    )
    assert config.cache == CacheConfig()
    assert config.upstream == UpstreamConfig()
    assert (config.web, config.description, config.suggest) == (
        WebConfig(),
        DescriptionConfig(),
        SuggestConfig(),
    )
    assert config.orgs[0].rate_limit == UpstreamConfig().rate_limit
    assert config.clients[0].rate_limit == 600


def test_secrets_that_would_open_each_other_ports_out_of_range_and_clients_of_nothing_are_refused() -> None:
    """check-config accepted all of these: a client token equal to the metrics token, an org key
    or a webhook secret; a client with `orgs = []`; `public_url` with port 99999. Each is now a
    problem by key path that says what to write instead, and quotes no value."""
    text = (
        '[server]\npublic_url = "http://videos.example.edu:99999"\n'
        'signing_secret = "signing-secret-0123456789"\nmetrics_token = "metrics-token-0123456789"\n'
        '[[orgs]]\nid = "a"\napi_key = "org-key-0123456789abc"\nwebhook_secret = "webhook-secret-0123456789"\n'
        '[[clients]]\nname = "one"\ntoken = "metrics-token-0123456789"\n'
        '[[clients]]\nname = "two"\ntoken = "org-key-0123456789abc"\norgs = []\n'
        '[[clients]]\nname = "three"\ntoken = "webhook-secret-0123456789"\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, environ={})
    problems = caught.value.problems
    assert "server.public_url: must have a port from 1 to 65535, or none" in problems
    assert any(
        p.startswith("clients[1].orgs: names no organisation") and "leave it out" in p for p in problems
    )
    assert any(p.startswith("clients[0].token: must differ from server.metrics_token") for p in problems)
    assert any(p.startswith("clients[1].token: must differ from an organisation's api_key") for p in problems)
    assert any(
        p.startswith("clients[2].token: must differ from an organisation's webhook_secret") for p in problems
    )
    assert not any(secret in str(caught.value) for secret in ("0123456789",))
