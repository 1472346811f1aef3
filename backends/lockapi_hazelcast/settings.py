"""Reading the URL and options of a ``hazelcast://`` backend into :class:`Settings` (no I/O).

URL: ``hazelcast://[user:password@]host:port[,host:port...][?option=value...]``. Options:

* ``cluster_name`` (default ``dev``): the cluster to join;
* ``members``: extra member addresses (``host:port``, list or comma-separated), added to the URL's;
* ``mode``: ``map`` (``hazelcast://``: IMap leases, works on every edition) or ``cp`` (the
  ``hazelcast+cp://`` plugin: CP subsystem FencedLock and ISemaphore; needs a cluster with the CP
  subsystem, e.g. community 5.4 or Enterprise). lockapi's core turns ``hazelcast://...?mode=cp`` into
  ``hazelcast+cp``; a backend accepts only its own mode here;
* ``prefix`` (default ``lockapi``): the distributed objects are named ``<prefix>.locks``,
  ``<prefix>.permits``, ``<prefix>.fences``, ``<prefix>.done`` (map mode) and ``<prefix>/<name>``
  (cp mode), so several applications can share a cluster without sharing locks.

``config.timeout`` bounds connecting (the client's ``cluster_connect_timeout`` and ``connection_timeout``)
and every operation (``invocation_timeout``); the client's own defaults retry for minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from lockapi.spi import BackendConfig, ConfigError

__all__ = ["DEFAULT_PORT", "MODES", "Settings", "describe", "read_settings"]

MODES = ("map", "cp")
DEFAULT_PORT = 5701


@dataclass(frozen=True)
class Settings:
    """Everything a Hazelcast backend needs to connect, decided before any I/O."""

    members: tuple[str, ...]
    cluster_name: str
    prefix: str
    timeout: float
    username: str | None = None
    password: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``hazelcast.HazelcastClient``: every wait bounded by ``timeout``."""
        kwargs: dict[str, Any] = {
            "cluster_members": list(self.members),
            "cluster_name": self.cluster_name,
            "cluster_connect_timeout": self.timeout,
            "connection_timeout": self.timeout,
            "invocation_timeout": self.timeout,
            "retry_initial_backoff": min(0.2, self.timeout / 4),
            "retry_max_backoff": max(0.5, self.timeout / 4),
            "statistics_enabled": False,
        }
        if self.username is not None:
            kwargs["creds_username"] = self.username
            kwargs["creds_password"] = self.password or ""
        return kwargs


def read_settings(config: BackendConfig, mode: str) -> Settings:
    """Parse ``config`` (URL and options) for the backend of ``mode`` and call ``options.finish()``;
    raise ConfigError if anything is wrong."""
    parts = urlsplit(config.url)
    hostinfo = parts.netloc
    username = password = None
    if "@" in hostinfo:
        userinfo, _, hostinfo = hostinfo.rpartition("@")
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user), unquote(secret)
    if parts.path not in ("", "/"):
        raise ConfigError(f"a hazelcast URL has no path; got {config.redacted_url}")
    options = config.options
    members = [_address(a) for a in hostinfo.split(",") if a.strip()]
    members += [_address(a) for a in options.list("members")]
    cluster_name = options.str("cluster_name", "dev") or "dev"
    chosen = options.str("mode", mode)
    if chosen != mode:
        raise ConfigError(
            f"option 'mode' must be one of {', '.join(MODES)} (hazelcast:// is map mode, hazelcast+cp:// "
            f"is cp mode); got {chosen!r} on a {config.scheme}:// URL"
        )
    prefix = options.str("prefix", "lockapi") or ""
    options.finish()
    if not members:
        members = [f"127.0.0.1:{DEFAULT_PORT}"]
    if not prefix or "/" in prefix or prefix != prefix.strip():
        raise ConfigError(
            f"option 'prefix' must be a non-empty name without '/' or surrounding whitespace; got {prefix!r}")
    return Settings(tuple(members), cluster_name, prefix, config.timeout, username, password)


def describe(config: BackendConfig, mode: str) -> str:
    """How errors name the backend (its URL redacted: never a password), sync and asyncio alike."""
    return f"hazelcast {config.redacted_url} (mode={mode})"


def _address(text: str) -> str:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        return f"{text.strip()}:{DEFAULT_PORT}"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"a hazelcast member address is host:port; got {text.strip()!r}")
    return f"{host}:{port}"
