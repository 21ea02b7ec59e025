"""The service's configuration: one TOML file, validated all at once.

`load_config` either returns a frozen `Config` or raises `ConfigError` carrying
every problem found, one line each, each naming its key path
(`orgs[1].api_key: ...`). Problems never quote a value: a secret typed into the
wrong key must not end up on a terminal or in a log. Secrets may be written as
`env:NAME`, which reads the environment; their fields are left out of `repr`.

Each setting's default and rule is written once, on its field (`settings.setting`);
what one field cannot say alone (a default built from others, keys that must
differ) is checked in `parse_config`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aggregator.settings import (
    Choice,
    ExistingFile,
    Flag,
    Number,
    Secret,
    Strings,
    Table,
    Text,
    Url,
    UrlPath,
    Whole,
    read_fields,
    setting,
)

ORG_ID_RE = re.compile(r"[a-z0-9-]+")
DEFAULT_CONFIG_PATH = "config/aggregator.toml"
CONFIG_ENV_VAR = "AGGREGATOR_CONFIG"
MIN_TOKEN_LENGTH = 16
DAY = 86_400
MANY = 1_000_000


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = setting("127.0.0.1", Text())
    port: int = setting(8080, Whole(0, 65535))
    # Absolute base for links in feeds and the description; "" until read: http://{host}:{port}.
    public_url: str = setting("", Url())
    # Processes that run feedparser beside the event loop; 0 runs it in a thread.
    parse_workers: int = setting(2, Whole(0, 64))
    access_log: bool = setting(True, Flag())  # one line per request on stderr, client tokens redacted
    log_format: str = setting("text", Choice(("text", "json")))  # json: one object per line
    anonymous_rate_limit: int = setting(0, Whole(0, MANY))  # requests a minute per address; 0 is off
    # Networks whose X-Forwarded-For is believed.
    trusted_proxies: tuple[str, ...] = setting(
        (), Strings(networks=True, rule="must be IP addresses or networks (10.0.0.0/8)")
    )
    # How many replicas (machines or containers) share each org key; with Redis
    # away each process falls back to budget / (replicas_hint * workers).
    replicas_hint: int = setting(1, Whole(1, 10_000))
    header_timeout: float = setting(10.0, Number(0.0, 600.0, above=True))  # seconds for a request's headers
    keepalive_timeout: float = setting(
        15.0, Number(0.0, 3600.0, above=True)
    )  # seconds an idle connection is kept
    max_connections: int = setting(1000, Whole(1, MANY))  # open connections per process
    workers: int = 1  # processes of this replica: set by `serve --workers`, not by the file
    # Signs scoped thumbnail URLs so feed readers need no token for pictures; shared by every replica.
    signing_secret: str | None = setting(None, Secret(MIN_TOKEN_LENGTH), secret=True)
    # Optional: /metrics needs it as a Bearer token.
    metrics_token: str | None = setting(None, Secret(MIN_TOKEN_LENGTH), secret=True)
    websub_hub: str | None = setting(None, Url())  # open feeds name it, and changed ones are announced


@dataclass(frozen=True, slots=True)
class CacheConfig:
    # May carry a Redis password, so it stays out of repr like the keys do.
    redis_url: str | None = setting(None, Secret(), secret=True)
    search_ttl: int = setting(300, Whole(1, DAY * 7))
    duration_ttl: int = setting(2_592_000, Whole(1, DAY * 3650))
    stale_ttl: int = setting(DAY, Whole(1, DAY * 365))
    failed_duration_ttl: int = setting(600, Whole(1, DAY))
    # The in-process caches of one process, in bytes.
    memory_max_bytes: int = setting(256 * 1024 * 1024, Whole(1 << 20, 1 << 40))
    # Seconds past search_ttl during which an expired answer is served at once
    # (marked stale) while a fresh one is fetched in the background; 0 is off.
    stale_while_revalidate: int = setting(0, Whole(0, DAY))
    # Seconds an org answer that still lacks some durations is fresh: the
    # missing ones are looked up behind it and show once they land.
    incomplete_ttl: int = setting(15, Whole(1, DAY))
    # Seconds a polled feed is kept fresh without being polled again, then forgotten.
    subscription_idle: int = setting(172_800, Whole(60, DAY * 365))
    # TLS (rediss://): file paths, or env:NAME; the client certificate and key only if Redis asks.
    redis_ca: str | None = setting(None, ExistingFile())
    redis_cert: str | None = setting(None, ExistingFile())
    redis_key: str | None = setting(None, ExistingFile(), secret=True)
    redis_cluster: bool = setting(False, Flag())  # redis_url names one node of a Redis Cluster
    # Connections per Redis client (the cache's and the limiter's each).
    redis_pool_size: int = setting(64, Whole(1, 10_000))
    # Seconds a Redis command may take before it counts as an outage.
    redis_timeout: float = setting(1.0, Number(0.0, 60.0, above=True))
    redis_connect_timeout: float = setting(0.5, Number(0.0, 60.0, above=True))
    # After Redis fails, how long to use memory before trying again.
    redis_retry_seconds: float = setting(5.0, Number(0.0, 3600.0, above=True))


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    base_url: str = setting("https://api.ilosvideos.com", Url())
    search_path: str = setting("/opensearch/", UrlPath())
    metadata_path: str = setting("/video/metadata", UrlPath())
    timeout: float = setting(4.0, Number(0.0, 120.0, above=True))
    max_body_bytes: int = setting(5 * 1024 * 1024, Whole(1024, 1 << 30))
    # Requests per rate_window per org key, search and metadata, every process.
    rate_limit: int = setting(60, Whole(1, MANY))
    rate_window: int = setting(60, Whole(1, DAY))  # seconds
    # Share of each window that duration lookups leave for searches.
    search_reserve: float = setting(0.25, Number(0.0, 1.0))
    # Share of each window that a search for a query nobody asked lately leaves for repeated ones.
    one_off_reserve: float = setting(0.5, Number(0.0, 1.0))
    # Seconds a whole search may take, whatever the orgs do.
    deadline: float = setting(5.0, Number(0.0, 600.0, above=True))
    # Seconds an answer waits for its lookups after its org's search.
    duration_wait: float = setting(0.3, Number(0.0, 60.0))
    max_items: int = setting(500, Whole(1, 100_000))  # most items one org's answer may contribute
    # Most of each window that keeping polled feeds fresh may spend.
    refresh_share: float = setting(0.3, Number(0.0, 1.0))


_CSP_SOURCE = r"\*|'self'|'none'|(?:https?://)?(?:\*\.)?[A-Za-z0-9.-]+(?::\d+|:\*)?|https?:"
_FRAME_ANCESTORS_RULE = 'must be CSP sources like "\'self\'", "https://intranet.example.edu" or "*"'


@dataclass(frozen=True, slots=True)
class WebConfig:
    # CSP frame-ancestors sources for the search page. The default lets any
    # intranet embed it; list your intranet's origins to restrict it.
    frame_ancestors: tuple[str, ...] = setting(("*",), Strings(_CSP_SOURCE, _FRAME_ANCESTORS_RULE))
    # Origins whose scripts may read the feeds, suggestions and description (CORS); "*" is any.
    cors_origins: tuple[str, ...] = setting(
        ("*",),
        Strings(
            r"\*|https?://[A-Za-z0-9.-]+(?::\d{1,5})?/?",
            'must be "*" or origins like "https://intranet.example.edu"',
        ),
    )


@dataclass(frozen=True, slots=True)
class SuggestConfig:
    # Distinct callers before a past query is suggested to anyone.
    min_query_count: int = setting(3, Whole(1, 1000))
    retention: int = setting(30, Whole(1, 3650))  # days a past query is kept for suggestions


@dataclass(frozen=True, slots=True)
class DescriptionConfig:
    """What the OpenSearch description says about the service."""

    short_name: str = setting(
        "ilos videos", Text(most=16, most_rule="must be at most 16 characters (OpenSearch 1.1)")
    )
    long_name: str = setting("Videos from every ilos organisation", Text(cut=48))
    description: str = setting("Search the videos of every ilos organisation at once.", Text(cut=1024))
    tags: str = setting("video lectures recordings ilos vidgrid", Text(cut=256))
    # An e-mail address people can write to.
    contact: str | None = setting(
        None, Text(pattern=r"[^@\s]+@[^@\s]+", pattern_rule="must be an e-mail address")
    )
    example_query: str = setting("onboarding", Text())
    # The language of titles and pages, said in every format (BCP 47).
    language: str = setting(
        "en",
        Text(
            pattern=r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8}){0,4}",
            pattern_rule="must be a language tag such as en, de or en-GB",
        ),
    )


@dataclass(frozen=True, slots=True)
class RankingConfig:
    # How much each org's own order counts beside the text match, 0 (not at all) to 10: the
    # first of an org's results gets this much on top of a text score between 0 and 1.
    position_prior: float = setting(0.3, Number(0.0, 10.0))


_UPSTREAM = UpstreamConfig()


@dataclass(frozen=True, slots=True)
class Org:
    id: str
    name: str
    api_key: str = field(repr=False)
    base_url: str
    # Requests per upstream.rate_window for this org's key; read with upstream.rate_limit as default.
    rate_limit: int = setting(_UPSTREAM.rate_limit, Whole(1, MANY))
    # The secret in the path of this org's upload webhook; None: no webhook for this org.
    webhook_secret: str | None = setting(None, Secret(), secret=True)
    # Scales this org's results in the relevance order (1.0: as every other org).
    weight: float = setting(1.0, Number(0.0, 100.0))


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    token: str = field(repr=False)
    orgs: tuple[str, ...] | None = None
    rate_limit: int = setting(600, Whole(1, MANY))  # requests a minute with this token


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    cache: CacheConfig
    upstream: UpstreamConfig
    orgs: tuple[Org, ...]
    clients: tuple[Client, ...] = ()
    web: WebConfig = WebConfig()
    description: DescriptionConfig = DescriptionConfig()
    suggest: SuggestConfig = SuggestConfig()
    ranking: RankingConfig = RankingConfig()
    # Deprecated keys that were accepted: said once when the service starts.
    warnings: tuple[str, ...] = ()

    def org(self, org_id: str) -> Org | None:
        return next((o for o in self.orgs if o.id == org_id), None)


_WEBHOOK_SECRET_RE = re.compile(rf"[A-Za-z0-9_-]{{{MIN_TOKEN_LENGTH},128}}")


def default_config_path(explicit: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """`--config`, else `$AGGREGATOR_CONFIG`, else `config/aggregator.toml`."""
    return explicit or environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH


def load_config(path: str | Path, environ: Mapping[str, str] = os.environ) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read ({type(exc).__name__})"]) from None
    return parse_config_text(text, environ)


def parse_config_text(text: str, environ: Mapping[str, str] = os.environ) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages name a line and column, never the offending value.
        raise ConfigError([f"TOML syntax: {exc}"]) from None
    return parse_config(data, environ)


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """`redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]`.

    The password (and user) are the Redis primary's, and the Sentinels' too; `rediss+sentinel`
    speaks TLS to both, with `redis_ca`, `redis_cert` and `redis_key` as for `rediss://`.
    """

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def sentinel_url(url: str) -> SentinelUrl:
    """Raises ValueError, naming what is wrong but never the password."""
    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = []
    for host_port in hosts.split(","):
        host, _, port = host_port.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65_536:
            raise ValueError("each Sentinel must be host:port, separated by commas")
        sentinels.append((host, int(port)))
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError("must end with /service_name or /service_name/db (the db a number)")
    return SentinelUrl(
        tuple(sentinels),
        parts[0],
        int(parts[1]) if len(parts) == 2 else 0,
        unquote(username) or None,
        unquote(password) or None,
        scheme == "rediss+sentinel",
    )


def parse_config(data: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> Config:
    problems: list[str] = []
    warnings: list[str] = []
    root = Table(data, "", problems)

    server_t = root.table("server")
    server = ServerConfig(**read_fields(server_t, ServerConfig, environ))
    server_t.finish()
    if not server.public_url:
        bracketed = f"[{server.host}]" if ":" in server.host else server.host
        server = replace(server, public_url=f"http://{bracketed}:{server.port}")
    server = replace(server, public_url=server.public_url.rstrip("/"))

    cache_t = root.table("cache")
    cache = CacheConfig(**read_fields(cache_t, CacheConfig, environ))
    if cache.redis_url is not None:
        scheme = urlsplit(cache.redis_url).scheme
        if scheme in SENTINEL_SCHEMES:
            try:
                sentinel_url(cache.redis_url)
            except ValueError as exc:
                problems.append(f"cache.redis_url: {exc}")
            if cache.redis_cluster:
                problems.append("cache.redis_cluster: a Sentinel-managed Redis is not a Cluster")
        elif scheme not in ("redis", "rediss", "unix"):
            problems.append(
                "cache.redis_url: must be a redis://, rediss://, unix:// or redis+sentinel:// URL"
            )
    if cache_t.integer("memory_max_entries", 10_000, 10, 10_000_000) and "memory_max_entries" in cache_t.data:
        warnings.append(
            "cache.memory_max_entries: deprecated and ignored; the bound is cache.memory_max_bytes now"
        )
    cache_t.finish()

    up_t = root.table("upstream")
    upstream = UpstreamConfig(**read_fields(up_t, UpstreamConfig, environ))
    upstream = replace(upstream, base_url=upstream.base_url.rstrip("/"))
    if up_t.integer("metadata_concurrency", 4, 1, 100) and "metadata_concurrency" in up_t.data:
        warnings.append(
            "upstream.metadata_concurrency: deprecated and ignored; duration lookups are bounded by "
            "upstream.rate_limit and upstream.search_reserve now"
        )
    up_t.finish()

    web_t = root.table("web")
    web = WebConfig(**read_fields(web_t, WebConfig, environ))
    ancestors = web.frame_ancestors
    if not ancestors:
        web_t.problem("frame_ancestors", _FRAME_ANCESTORS_RULE)
    elif "'none'" in ancestors and len(ancestors) > 1:
        web_t.problem("frame_ancestors", "'none' must stand alone")
    web_t.finish()

    desc_t = root.table("description")
    description = DescriptionConfig(**read_fields(desc_t, DescriptionConfig, environ))
    desc_t.finish()

    suggest_t = root.table("suggest")
    suggest = SuggestConfig(**read_fields(suggest_t, SuggestConfig, environ))
    suggest_t.finish()

    ranking_t = root.table("ranking")
    ranking = RankingConfig(**read_fields(ranking_t, RankingConfig, environ))
    ranking_t.finish()

    orgs = _orgs(root, upstream, environ, problems)
    clients = _clients(root, {o.id for o in orgs}, environ, problems)
    _check_distinct_secrets(clients, orgs, server, problems)
    if clients and server.signing_secret is None and "signing_secret" not in server_t.problem_keys:
        problems.append(
            "server.signing_secret: is required with [[clients]]: it signs scoped thumbnail URLs "
            "(write it as env:NAME)"
        )
    root.finish()
    if problems:
        raise ConfigError(problems)
    return Config(server, cache, upstream, orgs, clients, web, description, suggest, ranking, tuple(warnings))


def _orgs(
    root: Table, upstream: UpstreamConfig, environ: Mapping[str, str], problems: list[str]
) -> tuple[Org, ...]:
    orgs: list[Org] = []
    org_tables = root.array("orgs")
    if not org_tables and "orgs" not in root.problem_keys:
        problems.append("orgs: at least one [[orgs]] table is required")
    seen_ids: set[str] = set()
    for i, org_t in enumerate(org_tables):
        org_id = org_t.string("id", None, required=True)
        if org_id is not None:
            if not ORG_ID_RE.fullmatch(org_id) or len(org_id) > 64:
                problems.append(f"orgs[{i}].id: must match [a-z0-9-]+ (at most 64 characters)")
            elif org_id in seen_ids:
                problems.append(f"orgs[{i}].id: duplicate organisation id")
            seen_ids.add(org_id)
        name = org_t.string("name", org_id, required=False) or org_id or ""
        api_key = org_t.secret("api_key", environ, required=True)
        base_url = (org_t.url("base_url", upstream.base_url) or upstream.base_url).rstrip("/")
        read = read_fields(org_t, Org, environ, rate_limit=upstream.rate_limit)
        secret = read["webhook_secret"]
        if secret is not None and not _WEBHOOK_SECRET_RE.fullmatch(secret):
            problems.append(
                f"orgs[{i}].webhook_secret: must be {MIN_TOKEN_LENGTH} to 128 letters, digits, - or _ "
                "(it is a URL path segment)"
            )
            read["webhook_secret"] = None
        org_t.finish()
        if org_id is not None and api_key is not None:
            orgs.append(Org(org_id, name, api_key, base_url, **read))
    return tuple(orgs)


def _clients(
    root: Table, org_ids: set[str], environ: Mapping[str, str], problems: list[str]
) -> tuple[Client, ...]:
    clients: list[Client] = []
    seen_tokens: set[str] = set()
    seen_names: set[str] = set()
    for i, client_t in enumerate(root.array("clients")):
        cname = client_t.string("name", None, required=True)
        if cname is not None:
            if cname in seen_names:
                problems.append(f"clients[{i}].name: the same name is given to another client")
            seen_names.add(cname)
        token = client_t.secret("token", environ, required=True)
        if token is not None:
            if len(token) < MIN_TOKEN_LENGTH:
                problems.append(f"clients[{i}].token: must be at least {MIN_TOKEN_LENGTH} characters")
            elif token in seen_tokens:
                problems.append(f"clients[{i}].token: the same token is given to another client")
            seen_tokens.add(token)
        read = read_fields(client_t, Client, environ)
        allowed = client_t.string_list("orgs")
        if allowed is not None and any(org_id not in org_ids for org_id in allowed):
            problems.append(f"clients[{i}].orgs: names an organisation that is not configured")
        elif allowed == []:
            problems.append(
                f"clients[{i}].orgs: names no organisation, so the client could search nothing; "
                "leave it out to let the client see every organisation"
            )
        client_t.finish()
        if cname is not None and token is not None:
            clients.append(Client(cname, token, tuple(allowed) if allowed is not None else None, **read))
    return tuple(clients)


def _check_distinct_secrets(
    clients: tuple[Client, ...], orgs: tuple[Org, ...], server: ServerConfig, problems: list[str]
) -> None:
    """A client token that is also another secret would hand whoever holds one the other: a feed
    reader's key= would open /metrics, or a webhook secret would search every org."""
    others: dict[str | None, str] = {
        server.metrics_token: "server.metrics_token",
        **{o.api_key: f"an organisation's api_key ({o.id})" for o in orgs},
        **{o.webhook_secret: f"an organisation's webhook_secret ({o.id})" for o in orgs if o.webhook_secret},
    }
    for i, client in enumerate(clients):
        same = others.get(client.token)
        if same is not None:
            problems.append(
                f"clients[{i}].token: must differ from {same}; give the client a token of its own"
            )
