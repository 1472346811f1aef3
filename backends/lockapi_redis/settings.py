"""Parse a Redis URL and the backend options into :class:`Settings` (no I/O).

URL forms (the query string arrives separately, as options)::

    redis://[[user]:password@]host[:port][/db]
    rediss://[[user]:password@]host[:port][/db]                     TLS
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...]

User and password (percent-encoded) authenticate to Redis itself (ACL user or ``requirepass``);
sentinels take ``sentinel_username`` / ``sentinel_password`` options. IPv6 hosts go in brackets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from lockapi.spi import BackendConfig, ConfigError, redact_url

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
CERT_REQS = ("required", "optional", "none")


@dataclass
class Settings:
    """Everything needed to build the redis-py client for one backend."""

    kind: str
    """"standalone", "sentinel" or "cluster"."""
    hosts: list[tuple[str, int]]
    service_name: str | None
    connection: dict[str, Any]
    """Keyword arguments for every redis-py connection (auth, TLS, timeouts, db)."""
    sentinel_connection: dict[str, Any] = field(default_factory=dict)
    max_connections: int = 50
    max_idle_connections: int = 50
    """Open idle command connections kept in the pool at most (default: ``max_connections``)."""
    idle_timeout: float = 0.0
    """Seconds an unused connection stays open (0: until closed); see :mod:`lockapi_redis.idle`."""
    prefix: str = "lockapi"
    wait_replicas: int = 0
    wait_replicas_timeout: float = 1.0
    sharded_pubsub: bool = False
    fence_ttl: float = 30 * 24 * 3600.0
    """Seconds an idle fencing counter is kept (0: forever); see scripts.py."""


def _split_hosts(netloc: str, default_port: int, url: str) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = part.partition(":")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ConfigError(f"bad port {port_text!r} in {redact_url(url)}") from None
        if not host or not 0 < port < 65536:
            raise ConfigError(f"bad host or port {part!r} in {redact_url(url)}")
        hosts.append((host, port))
    if not hosts:
        raise ConfigError(f"no host in {redact_url(url)}")
    return hosts


def _db(text: str, url: str) -> int:
    if not text:
        return 0
    try:
        db = int(text)
    except ValueError:
        raise ConfigError(f"database must be a number, got {text!r} in {redact_url(url)}") from None
    if db < 0:
        raise ConfigError(f"database must be >= 0 in {redact_url(url)}")
    return db


def parse(config: BackendConfig) -> Settings:
    """Read the URL and every option; raise :class:`ConfigError` before any I/O on any mistake."""
    url, opts, scheme = config.url, config.options, config.scheme
    if scheme not in ("redis", "rediss", "redis+sentinel", "redis+cluster"):
        raise ConfigError(f"the redis backend does not serve scheme {scheme!r}")
    rest = url.split("://", 1)[1] if "://" in url else ""
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    netloc, _, path = rest.partition("/")
    userinfo, _, hostinfo = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, has_pw, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
        if not has_pw:  # "redis://secret@host" is the classic password-only form
            username, password = None, unquote(user)

    kind = {"redis+sentinel": "sentinel", "redis+cluster": "cluster"}.get(scheme, "standalone")
    service_name: str | None = None
    segments = [s for s in path.split("/") if s]
    if kind == "sentinel":
        if not segments:
            raise ConfigError(f"sentinel URL needs a service name: {redact_url(url)} "
                              "(redis+sentinel://host:26379,host:26380/mymaster)")
        service_name = unquote(segments[0])
        db = _db(segments[1] if len(segments) > 1 else "", url)
        extra = segments[2:]
    elif kind == "cluster":
        db, extra = 0, segments
    else:
        db = _db(segments[0] if segments else "", url)
        extra = segments[1:]
    if extra:
        raise ConfigError(f"unexpected path {'/'.join(extra)!r} in {redact_url(url)}")
    default_port = DEFAULT_SENTINEL_PORT if kind == "sentinel" else DEFAULT_PORT
    hosts = _split_hosts(hostinfo, default_port, url)
    if kind == "standalone" and len(hosts) > 1:
        raise ConfigError(f"{scheme}:// takes one host; use redis+sentinel:// or redis+cluster://")

    timeout = config.timeout
    connection: dict[str, Any] = {
        "username": username,
        "password": password,
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "socket_keepalive": opts.bool("socket_keepalive", True),
        "health_check_interval": opts.float("health_check_interval", 0.0, strict=False),
        "protocol": 2,
        "client_name": opts.str("client_name"),
    }
    if kind != "cluster":
        connection["db"] = db
    tls = scheme == "rediss" or opts.bool("tls", False)
    ca = opts.str("ssl_ca_certs")
    certfile = opts.str("ssl_certfile")
    keyfile = opts.str("ssl_keyfile")
    cert_reqs = opts.str("ssl_cert_reqs", "required", choices=CERT_REQS)
    check_hostname = opts.bool("ssl_check_hostname", False)
    if tls:
        connection.update(ssl_ca_certs=ca, ssl_certfile=certfile, ssl_keyfile=keyfile,
                          ssl_cert_reqs=cert_reqs, ssl_check_hostname=check_hostname)
    elif ca or certfile or keyfile:
        raise ConfigError("ssl_* options need TLS: use rediss:// (or tls=true for sentinel/cluster)")

    sentinel_connection: dict[str, Any] = {}
    s_user = opts.str("sentinel_username")
    s_password = opts.str("sentinel_password")
    if kind == "sentinel":
        # Ask the sentinels one after another, all within one timeout.
        per_sentinel = timeout / len(hosts)
        sentinel_connection = {
            "username": s_user, "password": s_password, "protocol": 2,
            "socket_connect_timeout": per_sentinel, "socket_timeout": per_sentinel,
        }
    elif s_user or s_password:
        raise ConfigError("sentinel_username/sentinel_password need a redis+sentinel:// URL")

    max_connections = opts.int("max_connections", 50, minimum=1)
    if "max_idle_connections" in opts and kind == "cluster":
            raise ConfigError("option 'max_idle_connections' is not available on redis+cluster (redis-py's "
                              "cluster pool keeps what it opened); use max_connections (per node) and "
                              "idle_timeout")

    sharded_default = "sharded" if kind == "cluster" else "classic"
    pubsub = opts.str("pubsub", sharded_default, choices=("sharded", "classic"))
    settings = Settings(
        kind=kind,
        hosts=hosts,
        service_name=service_name,
        connection=connection,
        sentinel_connection=sentinel_connection,
        max_connections=max_connections,
        max_idle_connections=opts.int("max_idle_connections", max_connections, minimum=0),
        idle_timeout=opts.float("idle_timeout", 0.0, strict=False),
        prefix=opts.str("prefix", "lockapi") or "lockapi",
        wait_replicas=opts.int("wait_replicas", 0, minimum=0),
        wait_replicas_timeout=opts.float("wait_replicas_timeout", 1.0),
        sharded_pubsub=pubsub == "sharded",
        fence_ttl=opts.float("fence_ttl", 30 * 24 * 3600.0, strict=False),
    )
    opts.finish()
    return settings
