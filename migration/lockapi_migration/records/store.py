"""Where the fleet keeps decision records, node heartbeats and migration milestones.

``open_record_store(url)`` picks the implementation by scheme: SQL URLs (sqlite, postgresql, mysql,
mariadb; SQLAlchemy Core) or Redis URLs (redis, rediss; redis-py). Both client libraries are optional
extras of lockapi and are imported only when such a store is opened. Every node of the fleet and the
``lockapi migrate`` commands must name the same store.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from lockapi.spi import ConfigError, redact_url
from lockapi_migration.records.model import Record

SHADOW_STARTED = "shadow_started"
"""Milestone: wall time the first node ran in shadow (done markers are written to both from then on)."""
BACKFILL_DONE = "backfill_done"
"""Milestone: wall time ``migrate backfill`` last completed."""


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


SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")
REDIS_SCHEMES = ("redis", "rediss")


def open_record_store(url: str) -> RecordStore:
    """The record store for ``url``; :class:`ConfigError` for an unknown scheme or a missing extra."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    try:
        if scheme in SQL_SCHEMES:
            from lockapi_migration.records.sql_store import SQLRecordStore

            return SQLRecordStore(url)
        if scheme in REDIS_SCHEMES:
            from lockapi_migration.records.redis_store import RedisRecordStore

            return RedisRecordStore(url)
    except ImportError as exc:
        extra = "redis" if scheme in REDIS_SCHEMES else "sql"
        raise ConfigError(
            f"the record store {redact_url(url)} needs {exc.name}: pip install 'lockapi[{extra}]'"
        ) from None
    raise ConfigError(
        f"migration record store must be a SQL URL ({', '.join(SQL_SCHEMES)}) or a Redis URL; "
        f"got {redact_url(url)!r}"
    )
