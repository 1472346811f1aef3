"""The record store on a SQL database (SQLAlchemy Core; names and values are always bound parameters).

The engine is the one lockapi's SQL backend builds for the URL for its DDL (the URL's driver, its
connect and busy timeouts; no pool, so it is safe in forked workers); the store only adds its own four
tables.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from lockapi.spi import Backend, BackendUnavailable, ConfigError
from lockapi_migration.records.model import Record
from lockapi_migration.records.store import LagSample, NodeInfo, RecordStore

metadata = sa.MetaData()
RECORDS = sa.Table(
    "lockapi_migration_records", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("node", sa.String(200), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("op", sa.String(32), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("ttl", sa.Float),
    sa.Column("shadow_delay", sa.Float),
    sa.Column("detail", sa.String(64), nullable=False),
    *[
        column
        for label in ("h", "r")
        for column in (
            sa.Column(f"{label}_decision", sa.String(16)),
            sa.Column(f"{label}_token", sa.BigInteger),
            sa.Column(f"{label}_latency", sa.Float),
            sa.Column(f"{label}_error", sa.String(320)),
            sa.Column(f"{label}_retry_after", sa.Float),
        )
    ],
)
NODES = sa.Table(
    "lockapi_migration_nodes", metadata,
    sa.Column("node", sa.String(200), primary_key=True),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
)
LAG = sa.Table(
    "lockapi_migration_lag", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node", sa.String(200), nullable=False),
    sa.Column("minute", sa.Float, nullable=False, index=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("p50", sa.Float, nullable=False),
    sa.Column("p99", sa.Float, nullable=False),
    sa.Column("max", sa.Float, nullable=False),
    sa.Column("stale", sa.Integer, nullable=False),
    sa.Column("dropped", sa.Integer, nullable=False),
    sa.Column("backlog", sa.Float, nullable=False),
    sa.Column("max_lag", sa.Float, nullable=False),
)
MILESTONES = sa.Table(
    "lockapi_migration_milestones", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
)


class SQLRecordStore(RecordStore):
    """Four tables, created on first use: records, lag, nodes, milestones."""

    def __init__(self, url: str, backend: Backend) -> None:
        super().__init__(url)
        engine = getattr(backend, "engine", None)
        if not isinstance(engine, sa.engine.Engine):
            raise ConfigError(f"the backend for {self.redacted_url} has no SQL engine to keep records in")
        self._backend = backend
        self._engine = engine
        with self._errors():
            self._create_tables(deadline=time.monotonic() + backend.config.timeout)

    def _create_tables(self, *, deadline: float) -> None:
        """Create the missing tables; a concurrent creator makes an attempt fail ("already exists"),
        and the next attempt sees its table and skips it."""
        while True:
            try:
                metadata.create_all(self._engine, checkfirst=True)
                return
            except sa.exc.DBAPIError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _errors(self) -> _Translate:
        return _Translate(self.redacted_url)

    def append(self, records: Sequence[Record]) -> None:
        if records:
            with self._errors(), self._engine.begin() as conn:
                conn.execute(RECORDS.insert(), [r.to_row() for r in records])

    def records(self, since: float | None = None) -> Iterator[Record]:
        query = sa.select(RECORDS).order_by(RECORDS.c.ts, RECORDS.c.id)
        if since is not None:
            query = query.where(RECORDS.c.ts >= since)
        with self._errors(), self._engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        for row in rows:
            row.pop("id")
            yield Record.from_row(row)

    def append_lag(self, samples: Sequence[LagSample]) -> None:
        if samples:
            with self._errors(), self._engine.begin() as conn:
                conn.execute(LAG.insert(), [asdict(sample) for sample in samples])

    def lag(self, since: float | None = None) -> list[LagSample]:
        query = sa.select(LAG).order_by(LAG.c.minute, LAG.c.id)
        if since is not None:
            query = query.where(LAG.c.minute >= since)
        with self._errors(), self._engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        return [LagSample(**{k: v for k, v in row.items() if k != "id"}) for row in rows]

    def beat(self, info: NodeInfo) -> None:
        values = {"phase": info.phase, "started": info.started, "heartbeat": info.heartbeat}
        with self._errors(), self._engine.begin() as conn:
            updated = conn.execute(NODES.update().where(NODES.c.node == info.node).values(**values))
            if updated.rowcount == 0:
                conn.execute(NODES.insert().values(node=info.node, **values))

    def leave(self, node: str) -> None:
        with self._errors(), self._engine.begin() as conn:
            conn.execute(NODES.delete().where(NODES.c.node == node))

    def nodes(self) -> list[NodeInfo]:
        with self._errors(), self._engine.connect() as conn:
            return [NodeInfo(r.node, r.phase, r.started, r.heartbeat)
                    for r in conn.execute(sa.select(NODES).order_by(NODES.c.node))]

    def set_milestone(self, key: str, value: float, *, only_if_absent: bool = False) -> None:
        with self._errors(), self._engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(MILESTONES.insert().values(key=key, value=value))
            except IntegrityError:
                if not only_if_absent:
                    conn.execute(MILESTONES.update().where(MILESTONES.c.key == key).values(value=value))

    def milestone(self, key: str) -> float | None:
        with self._errors(), self._engine.connect() as conn:
            value = conn.execute(sa.select(MILESTONES.c.value).where(MILESTONES.c.key == key)).scalar()
        return None if value is None else float(value)

    def close(self) -> None:
        self._backend.close()


class _Translate:
    """Turn SQLAlchemy errors into BackendUnavailable naming the (redacted) store."""

    def __init__(self, shown: str) -> None:
        self._shown = shown

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if isinstance(exc, SQLAlchemyError):
            raise BackendUnavailable(
                f"migration record store {self._shown}: {type(exc).__name__}: {getattr(exc, 'orig', exc)}"
            ) from None
