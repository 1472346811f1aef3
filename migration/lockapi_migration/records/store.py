"""Where the fleet keeps decision records, replay lag per minute, node heartbeats and milestones.

``open_record_store(url)`` picks the implementation by scheme: SQL URLs (sqlite, postgresql, mysql,
mariadb) or Redis URLs (redis, rediss, redis+sentinel, redis+cluster). The connection is made by
lockapi's own backend for that URL (``lockapi.open_backend``), so the store gets exactly its set-up:
``?timeout=`` (default: the caller's timeout, else 5 s) and the other URL options, TLS, sentinel, pool
limits, SQLite's WAL and busy timeout. The store uses that backend's public connection
(``SQLBackend.engine``, ``RedisBackend.client``) for its own tables or keys and never its lock tables.
Every node of the fleet and the ``lockapi migrate`` commands must name the same store.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from lockapi import open_backend
from lockapi.spi import ConfigError, redact_url
from lockapi_migration.records.model import Record

SHADOW_STARTED = "shadow_started"
"""Milestone: wall time the first node ran in shadow (done markers are written to both from then on)."""
BACKFILL_DONE = "backfill_done"
"""Milestone: wall time ``migrate backfill`` last completed."""


@dataclass(frozen=True, slots=True)
class LagSample:
    """How far one node's shadow replay ran behind its primary decisions during one minute.

    ``minute`` is the wall time the minute began; delays are in seconds; ``stale`` counts replays that
    ran more than the node's ``max_lag`` behind (recorded "stale, not compared"), ``dropped`` those
    shed because the replay queue was full; ``backlog`` is the age of the oldest task still queued when
    the sample was taken (a stuck replay shows there, not in the delays).
    """

    node: str
    minute: float
    count: int
    p50: float
    p99: float
    max: float
    stale: int
    dropped: int
    backlog: float
    max_lag: float


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node's entry in the fleet registry. ``heartbeat`` is the wall time of its last beat."""

    node: str
    phase: str
    started: float
    heartbeat: float


class RecordStore(abc.ABC):
    """Records, the node registry and milestones. Thread-safe; every call is one short round trip."""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    @abc.abstractmethod
    def append(self, records: Sequence[Record]) -> None:
        """Store ``records`` (one batch)."""

    @abc.abstractmethod
    def records(self, since: float | None = None) -> Iterator[Record]:
        """Every record with ``ts >= since`` (all when None), oldest first."""

    @abc.abstractmethod
    def append_lag(self, samples: Sequence[LagSample]) -> None:
        """Store per-minute replay lag samples."""

    @abc.abstractmethod
    def lag(self, since: float | None = None) -> list[LagSample]:
        """Every lag sample whose minute began at or after ``since`` (all when None), oldest first."""

    @abc.abstractmethod
    def beat(self, info: NodeInfo) -> None:
        """Create or refresh ``info.node``'s registry entry."""

    @abc.abstractmethod
    def leave(self, node: str) -> None:
        """Remove ``node`` from the registry (on a clean shutdown)."""

    @abc.abstractmethod
    def nodes(self) -> list[NodeInfo]:
        """Every registry entry, live or stale."""

    @abc.abstractmethod
    def set_milestone(self, key: str, value: float, *, only_if_absent: bool = False) -> None:
        """Store a milestone time; with ``only_if_absent`` keep an existing one."""

    @abc.abstractmethod
    def milestone(self, key: str) -> float | None:
        """A milestone time, or None if it was never set."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent."""


SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb")
REDIS_SCHEMES = ("redis", "rediss")


def open_record_store(url: str, timeout: float | None = None) -> RecordStore:
    """The record store for ``url``; :class:`ConfigError` for an unknown scheme or a missing extra.

    ``timeout`` (seconds) bounds its calls when the URL sets no ``?timeout=`` (the migration backend
    passes its caller's, so a store that is down fails a node's ``connect()`` within that timeout)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme not in SQL_SCHEMES + REDIS_SCHEMES:
        raise ConfigError(
            f"migration record store must be a SQL URL ({', '.join(SQL_SCHEMES)}) or a Redis URL "
            f"({', '.join(REDIS_SCHEMES)}, +sentinel, +cluster); got {redact_url(url)!r}")
    options = {} if timeout is None or "timeout" in dict(parse_qsl(urlsplit(url).query)) else {"timeout": timeout}
    backend = open_backend(url, options)  # the backend's URL parsing, options and connection set-up
    try:
        if scheme in SQL_SCHEMES:
            from lockapi_migration.records.sql_store import SQLRecordStore

            return SQLRecordStore(url, backend)
        from lockapi_migration.records.redis_store import RedisRecordStore

        return RedisRecordStore(url, backend)
    except BaseException:
        backend.close()
        raise
