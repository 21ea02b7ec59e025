"""The service's configuration: one TOML file, validated all at once.

`load_config` either returns a frozen `Config` or raises `ConfigError` carrying
every problem found, one line each, each naming its key path
(`orgs[1].api_key: ...`). Problems never quote a value: a secret typed into the
wrong key must not end up on a terminal or in a log. Secrets may be written as
`env:NAME`, which reads the environment; their fields are left out of `repr`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ORG_ID_RE = re.compile(r"[a-z0-9-]+")
DEFAULT_CONFIG_PATH = "config/aggregator.toml"
CONFIG_ENV_VAR = "AGGREGATOR_CONFIG"
MIN_TOKEN_LENGTH = 16


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    # Processes that run feedparser beside the event loop; 0 runs it in a thread.
    parse_workers: int = 2
    access_log: bool = True  # one line per request on stderr, client tokens redacted
    log_format: str = "text"  # or "json": one JSON object per line, access log included
    anonymous_rate_limit: int = 0  # requests a minute per address without a token; 0 is off
    trusted_proxies: tuple[str, ...] = ()  # networks whose X-Forwarded-For is believed
    # How many replicas (machines or containers) share each org key; with Redis
    # away each process falls back to budget / (replicas_hint * workers).
    replicas_hint: int = 1
    header_timeout: float = 10.0  # seconds for a request's headers to arrive
    keepalive_timeout: float = 15.0  # seconds an idle connection is kept
    max_connections: int = 1000  # open connections per process
    workers: int = 1  # processes of this replica: set by `serve --workers`, not by the file
    # Signs scoped thumbnail URLs so feed readers need no token for pictures; shared by every replica.
    signing_secret: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(
        default=None, repr=False
    )  # optional: /metrics needs it as a Bearer token
    websub_hub: str | None = None  # a WebSub hub: open feeds name it, and changed ones are announced


@dataclass(frozen=True, slots=True)
class CacheConfig:
    # May carry a Redis password, so it stays out of repr like the keys do.
    redis_url: str | None = field(default=None, repr=False)
    search_ttl: int = 300
    duration_ttl: int = 2_592_000
    stale_ttl: int = 86_400
    failed_duration_ttl: int = 600
    memory_max_bytes: int = 256 * 1024 * 1024  # the in-process caches of one process, in bytes
    redis_retry_seconds: float = 5.0  # after Redis fails, how long to use memory before trying again
    # TLS (rediss://): file paths, or env:NAME; the client certificate and key only if Redis asks.
    redis_ca: str | None = None
    redis_cert: str | None = None
    redis_key: str | None = field(default=None, repr=False)
    redis_cluster: bool = False  # redis_url names one node of a Redis Cluster
    redis_pool_size: int = 64  # connections per Redis client (the cache's and the limiter's each)
    redis_timeout: float = 1.0  # seconds a Redis command may take before it counts as an outage
    redis_connect_timeout: float = 0.5
    # Seconds past search_ttl during which an expired answer is served at once
    # (marked stale) while a fresh one is fetched in the background; 0 is off.
    stale_while_revalidate: int = 0
    # Seconds an org answer that still lacks some durations is fresh: the
    # missing ones are looked up behind it and show once they land.
    incomplete_ttl: int = 15
    # Seconds a polled feed is kept fresh without being polled again, then forgotten.
    subscription_idle: int = 172_800


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    base_url: str = "https://api.ilosvideos.com"
    search_path: str = "/opensearch/"
    metadata_path: str = "/video/metadata"
    timeout: float = 4.0
    max_body_bytes: int = 5 * 1024 * 1024
    rate_limit: int = 60  # requests per rate_window per org key, search and metadata, every process
    rate_window: int = 60  # seconds
    search_reserve: float = 0.25  # share of each window that duration lookups leave for searches
    deadline: float = 5.0  # seconds a whole search may take, whatever the orgs do
    duration_wait: float = 0.3  # seconds an answer waits for its lookups after its org's search
    max_items: int = 500  # most items one org's answer may contribute
    refresh_share: float = 0.3  # most of each window that keeping polled feeds fresh may spend


@dataclass(frozen=True, slots=True)
class WebConfig:
    # CSP frame-ancestors sources for the search page. The default lets any
    # intranet embed it; list your intranet's origins to restrict it.
    frame_ancestors: tuple[str, ...] = ("*",)
    # Origins whose scripts may read the feeds, suggestions and description (CORS); "*" is any.
    cors_origins: tuple[str, ...] = ("*",)


@dataclass(frozen=True, slots=True)
class SuggestConfig:
    min_query_count: int = 3  # distinct callers before a past query is suggested to anyone
    retention: int = 30  # days a past query is kept for suggestions


@dataclass(frozen=True, slots=True)
class DescriptionConfig:
    """What the OpenSearch description says about the service."""

    short_name: str = "ilos videos"  # at most 16 characters (OpenSearch 1.1)
    long_name: str = "Videos from every ilos organisation"
    description: str = "Search the videos of every ilos organisation at once."
    tags: str = "video lectures recordings ilos vidgrid"
    contact: str | None = None  # an e-mail address people can write to
    example_query: str = "onboarding"
    language: str = "en"  # the language of titles and pages, said in every format (BCP 47)


@dataclass(frozen=True, slots=True)
class Org:
    id: str
    name: str
    api_key: str = field(repr=False)
    base_url: str
    rate_limit: int = 60  # requests per upstream.rate_window for this org's key
    # The secret in the path of this org's upload webhook; None: no webhook for this org.
    webhook_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    token: str = field(repr=False)
    orgs: tuple[str, ...] | None = None
    rate_limit: int = 600  # requests a minute with this token


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
    # Deprecated keys that were accepted: said once when the service starts.
    warnings: tuple[str, ...] = ()

    def org(self, org_id: str) -> Org | None:
        return next((o for o in self.orgs if o.id == org_id), None)


_SERVER, _CACHE, _UPSTREAM = ServerConfig(), CacheConfig(), UpstreamConfig()
_WEB, _DESCRIPTION = WebConfig(), DescriptionConfig()
_WEBHOOK_SECRET_RE = re.compile(rf"[A-Za-z0-9_-]{{{MIN_TOKEN_LENGTH},128}}")
_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9.-]+(?::\d{1,5})?/?")
_CSP_SOURCE_RE = re.compile(r"\*|'self'|'none'|(?:https?://)?(?:\*\.)?[A-Za-z0-9.-]+(?::\d+|:\*)?|https?:")


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


def parse_config(data: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> Config:
    problems: list[str] = []
    root = _Table(data, "", problems)

    server_t = root.table("server")
    host = server_t.string("host", _SERVER.host) or _SERVER.host
    port = server_t.integer("port", _SERVER.port, 0, 65535)
    public_url = server_t.url("public_url", None)
    parse_workers = server_t.integer("parse_workers", _SERVER.parse_workers, 0, 64)
    access_log = server_t.boolean("access_log", _SERVER.access_log)
    log_format = server_t.string("log_format", "text") or "text"
    if log_format not in ("text", "json"):
        problems.append('server.log_format: must be "text" or "json"')
        log_format = "text"
    anonymous_rate_limit = server_t.integer("anonymous_rate_limit", 0, 0, 1_000_000)
    proxies = server_t.string_list("trusted_proxies") or []
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            problems.append("server.trusted_proxies: must be IP addresses or networks (10.0.0.0/8)")
            proxies = []
            break
    replicas_hint = server_t.integer("replicas_hint", 1, 1, 10_000)
    header_timeout = server_t.number("header_timeout", 10.0, 0.0, 600.0, exclusive_min=True)
    keepalive_timeout = server_t.number("keepalive_timeout", 15.0, 0.0, 3600.0, exclusive_min=True)
    max_connections = server_t.integer("max_connections", 1000, 1, 1_000_000)
    signing_secret = server_t.secret("signing_secret", environ, required=False)
    metrics_token = server_t.secret("metrics_token", environ, required=False)
    if metrics_token is not None and len(metrics_token) < MIN_TOKEN_LENGTH:
        problems.append(f"server.metrics_token: must be at least {MIN_TOKEN_LENGTH} characters")
    if signing_secret is not None and len(signing_secret) < MIN_TOKEN_LENGTH:
        problems.append(f"server.signing_secret: must be at least {MIN_TOKEN_LENGTH} characters")
    websub_hub = server_t.url("websub_hub", None)
    server_t.finish()
    if public_url is None:
        bracketed = f"[{host}]" if ":" in host else host
        public_url = f"http://{bracketed}:{port}"
    server = ServerConfig(
        host,
        port,
        public_url.rstrip("/"),
        parse_workers,
        access_log,
        log_format,
        anonymous_rate_limit=anonymous_rate_limit,
        trusted_proxies=tuple(proxies),
        replicas_hint=replicas_hint,
        header_timeout=header_timeout,
        keepalive_timeout=keepalive_timeout,
        max_connections=max_connections,
        signing_secret=signing_secret,
        metrics_token=metrics_token,
        websub_hub=websub_hub,
    )
    warnings: list[str] = []

    cache_t = root.table("cache")
    redis_url = cache_t.secret("redis_url", environ, required=False)
    if redis_url is not None and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        problems.append("cache.redis_url: must be a redis://, rediss:// or unix:// URL")
    cache = CacheConfig(
        redis_url=redis_url,
        search_ttl=cache_t.integer("search_ttl", _CACHE.search_ttl, 1, 86_400 * 7),
        duration_ttl=cache_t.integer("duration_ttl", _CACHE.duration_ttl, 1, 86_400 * 3650),
        stale_ttl=cache_t.integer("stale_ttl", _CACHE.stale_ttl, 1, 86_400 * 365),
        failed_duration_ttl=cache_t.integer("failed_duration_ttl", _CACHE.failed_duration_ttl, 1, 86_400),
        memory_max_bytes=cache_t.integer("memory_max_bytes", _CACHE.memory_max_bytes, 1 << 20, 1 << 40),
        stale_while_revalidate=cache_t.integer("stale_while_revalidate", 0, 0, 86_400),
        incomplete_ttl=cache_t.integer("incomplete_ttl", _CACHE.incomplete_ttl, 1, 86_400),
        subscription_idle=cache_t.integer("subscription_idle", _CACHE.subscription_idle, 60, 86_400 * 365),
        redis_ca=_existing_file(cache_t, "redis_ca", environ, problems),
        redis_cert=_existing_file(cache_t, "redis_cert", environ, problems),
        redis_key=_existing_file(cache_t, "redis_key", environ, problems),
        redis_cluster=cache_t.boolean("redis_cluster", False),
        redis_pool_size=cache_t.integer("redis_pool_size", 64, 1, 10_000),
        redis_timeout=cache_t.number("redis_timeout", 1.0, 0.0, 60.0, exclusive_min=True),
        redis_connect_timeout=cache_t.number("redis_connect_timeout", 0.5, 0.0, 60.0, exclusive_min=True),
        redis_retry_seconds=cache_t.number(
            "redis_retry_seconds", _CACHE.redis_retry_seconds, 0.0, 3600.0, exclusive_min=True
        ),
    )
    if cache_t.integer("memory_max_entries", 10_000, 10, 10_000_000) and "memory_max_entries" in cache_t.data:
        warnings.append(
            "cache.memory_max_entries: deprecated and ignored; the bound is cache.memory_max_bytes now"
        )
    cache_t.finish()

    up_t = root.table("upstream")
    upstream = UpstreamConfig(
        base_url=(up_t.url("base_url", _UPSTREAM.base_url) or _UPSTREAM.base_url).rstrip("/"),
        search_path=up_t.url_path("search_path", _UPSTREAM.search_path),
        metadata_path=up_t.url_path("metadata_path", _UPSTREAM.metadata_path),
        timeout=up_t.number("timeout", _UPSTREAM.timeout, 0.0, 120.0, exclusive_min=True),
        max_body_bytes=up_t.integer("max_body_bytes", _UPSTREAM.max_body_bytes, 1024, 1 << 30),
        rate_limit=up_t.integer("rate_limit", _UPSTREAM.rate_limit, 1, 1_000_000),
        rate_window=up_t.integer("rate_window", _UPSTREAM.rate_window, 1, 86_400),
        search_reserve=up_t.number("search_reserve", _UPSTREAM.search_reserve, 0.0, 1.0),
        deadline=up_t.number("deadline", _UPSTREAM.deadline, 0.0, 600.0, exclusive_min=True),
        duration_wait=up_t.number("duration_wait", _UPSTREAM.duration_wait, 0.0, 60.0),
        max_items=up_t.integer("max_items", _UPSTREAM.max_items, 1, 100_000),
        refresh_share=up_t.number("refresh_share", _UPSTREAM.refresh_share, 0.0, 1.0),
    )
    if up_t.integer("metadata_concurrency", 4, 1, 100) and "metadata_concurrency" in up_t.data:
        warnings.append(
            "upstream.metadata_concurrency: deprecated and ignored; duration lookups are bounded by "
            "upstream.rate_limit and upstream.search_reserve now"
        )
    up_t.finish()

    web_t = root.table("web")
    ancestors = web_t.string_list("frame_ancestors")
    if ancestors is not None:
        if not ancestors or not all(_CSP_SOURCE_RE.fullmatch(a) for a in ancestors):
            problems.append(
                "web.frame_ancestors: must be CSP sources like \"'self'\", "
                '"https://intranet.example.edu" or "*"'
            )
            ancestors = None
        elif "'none'" in ancestors and len(ancestors) > 1:
            problems.append("web.frame_ancestors: 'none' must stand alone")
            ancestors = None
    cors = web_t.string_list("cors_origins")
    if cors is not None and not all(o == "*" or _ORIGIN_RE.fullmatch(o) for o in cors):
        problems.append('web.cors_origins: must be "*" or origins like "https://intranet.example.edu"')
        cors = None
    web = WebConfig(
        tuple(ancestors) if ancestors else _WEB.frame_ancestors,
        tuple(cors) if cors is not None else _WEB.cors_origins,
    )
    web_t.finish()

    desc_t = root.table("description")
    language = desc_t.string("language", _DESCRIPTION.language) or _DESCRIPTION.language
    if not re.fullmatch(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8}){0,4}", language):
        problems.append("description.language: must be a language tag such as en, de or en-GB")
        language = _DESCRIPTION.language
    short_name = desc_t.string("short_name", _DESCRIPTION.short_name) or _DESCRIPTION.short_name
    if len(short_name) > 16:
        problems.append("description.short_name: must be at most 16 characters (OpenSearch 1.1)")
    contact = desc_t.string("contact", None)
    if contact is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", contact):
        problems.append("description.contact: must be an e-mail address")
    description = DescriptionConfig(
        short_name=short_name[:16],
        long_name=(desc_t.string("long_name", _DESCRIPTION.long_name) or "")[:48],
        description=(desc_t.string("description", _DESCRIPTION.description) or "")[:1024],
        tags=(desc_t.string("tags", _DESCRIPTION.tags) or "")[:256],
        contact=contact,
        example_query=desc_t.string("example_query", _DESCRIPTION.example_query) or "onboarding",
        language=language,
    )
    desc_t.finish()

    suggest_t = root.table("suggest")
    suggest = SuggestConfig(
        min_query_count=suggest_t.integer("min_query_count", 3, 1, 1000),
        retention=suggest_t.integer("retention", 30, 1, 3650),
    )
    suggest_t.finish()

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
        org_rate_limit = org_t.integer("rate_limit", upstream.rate_limit, 1, 1_000_000)
        webhook_secret = org_t.secret("webhook_secret", environ, required=False)
        if webhook_secret is not None and not _WEBHOOK_SECRET_RE.fullmatch(webhook_secret):
            problems.append(
                f"orgs[{i}].webhook_secret: must be {MIN_TOKEN_LENGTH} to 128 letters, digits, - or _ "
                "(it is a URL path segment)"
            )
            webhook_secret = None
        org_t.finish()
        if org_id is not None and api_key is not None:
            orgs.append(Org(org_id, name, api_key, base_url, org_rate_limit, webhook_secret))

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
        client_rate_limit = client_t.integer("rate_limit", 600, 1, 1_000_000)
        allowed = client_t.string_list("orgs")
        if allowed is not None:
            for org_id in allowed:
                if org_id not in seen_ids:
                    problems.append(f"clients[{i}].orgs: names an organisation that is not configured")
                    break
        client_t.finish()
        if cname is not None and token is not None:
            clients.append(
                Client(cname, token, tuple(allowed) if allowed is not None else None, client_rate_limit)
            )

    if clients and signing_secret is None and "signing_secret" not in server_t.problem_keys:
        problems.append(
            "server.signing_secret: is required with [[clients]]: it signs scoped thumbnail URLs "
            "(write it as env:NAME)"
        )
    root.finish()
    if problems:
        raise ConfigError(problems)
    return Config(
        server, cache, upstream, tuple(orgs), tuple(clients), web, description, suggest, tuple(warnings)
    )


def _existing_file(table: _Table, key: str, environ: Mapping[str, str], problems: list[str]) -> str | None:
    """A path (or env:NAME holding one) to a file that exists; None when the key is absent."""
    path = table.secret(key, environ, required=False)
    if path is not None and not Path(path).is_file():
        problems.append(f"{table.path}.{key}: no such file")
        return None
    return path


class _Table:
    """Reads one TOML table, recording problems instead of raising."""

    def __init__(self, data: Any, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        self.problem_keys: set[str] = set()
        if not isinstance(data, Mapping):
            self._problem("", "must be a table")
            data = {}
        self.data = data
        self.used: set[str] = set()

    def _name(self, key: str) -> str:
        if not key:
            return self.path
        return f"{self.path}.{key}" if self.path else key

    def _problem(self, key: str, message: str) -> None:
        self.problem_keys.add(key)
        self.problems.append(f"{self._name(key) or '(top level)'}: {message}")

    def _get(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def table(self, key: str) -> _Table:
        value = self._get(key)
        return _Table({} if value is None else value, self._name(key), self.problems)

    def array(self, key: str) -> list[_Table]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self._problem(key, f"must be an array of tables ([[{key}]])")
            return []
        return [_Table(item, f"{self._name(key)}[{i}]", self.problems) for i, item in enumerate(value)]

    def string(self, key: str, default: str | None, required: bool = False, hint: str = "") -> str | None:
        value = self._get(key)
        if value is None:
            if required:
                self._problem(key, "is required")
            return default
        if not isinstance(value, str) or not value.strip():
            self._problem(key, f"must be a non-empty string{hint}")
            return default
        return value.strip()

    def string_list(self, key: str) -> list[str] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self._problem(key, "must be an array of strings")
            return None
        return list(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self._problem(key, "must be true or false")
            return default
        return value

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self._problem(key, f"must be a whole number from {lo} to {hi}")
            return default
        return value

    def number(self, key: str, default: float, lo: float, hi: float, exclusive_min: bool = False) -> float:
        value = self._get(key)
        if value is None:
            return default
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            ok = (value > lo if exclusive_min else value >= lo) and value <= hi
        if not ok:
            low = "greater than" if exclusive_min else "at least"
            self._problem(key, f"must be a number {low} {lo:g} and at most {hi:g}")
            return default
        return float(value)

    def url(self, key: str, default: str | None) -> str | None:
        if self.data.get(key) is None:
            self.used.add(key)
            return default
        value = self.string(key, None)
        if value is None:
            return default
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self._problem(key, "must be an absolute http:// or https:// URL")
            return default
        if parts.query or parts.fragment or parts.username or parts.password:
            self._problem(key, "must not carry a query, fragment or credentials")
            return default
        return value

    def url_path(self, key: str, default: str) -> str:
        value = self.string(key, default) or default
        if not value.startswith("/") or "?" in value or "#" in value:
            self._problem(key, "must be a path starting with /")
            return default
        return value

    def secret(self, key: str, environ: Mapping[str, str], required: bool) -> str | None:
        value = self.string(key, None, required, hint=" (or env:NAME)")
        if value is None:
            return None
        if value.startswith("env:"):
            var = value[4:]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                self._problem(key, "env: must be followed by an environment variable name")
                return None
            resolved = environ.get(var)
            if resolved is None:
                self._problem(key, f"environment variable {var} is not set")
                return None
            if not resolved.strip():
                self._problem(key, f"environment variable {var} is empty")
                return None
            return resolved.strip()
        return value

    def finish(self) -> None:
        for key in sorted(set(self.data) - self.used):
            self._problem(str(key), "unknown key")
