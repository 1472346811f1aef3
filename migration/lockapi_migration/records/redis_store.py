"""The record store on Redis: a stream of record batches, a stream of lag samples, a hash of nodes and a
hash of milestones.

The client is the one lockapi's Redis backend builds for the URL (timeouts, TLS, sentinel or cluster,
bounded pool, no retries). Each stream entry holds one batch of records as a JSON list of
:meth:`Record.to_values` lists (one XADD per batch, not per record). Stream ids are the server's
millisecond time at insert, which is never before any of the batch's ``ts`` (records are written after
they happen), so ``records(since)`` is an XRANGE from ``since`` filtered on ``ts``. The streams are capped
(approximately) at :data:`MAX_ENTRIES` entries.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, astuple
from typing import Any, TypeVar

from redis.exceptions import RedisError

from lockapi.spi import Backend, BackendUnavailable, ConfigError
from lockapi_migration.records.model import Record
from lockapi_migration.records.store import LagSample, NodeInfo, RecordStore

PREFIX = "lockapi:migration:"
RECORDS_KEY = PREFIX + "records"
LAG_KEY = PREFIX + "lag"
NODES_KEY = PREFIX + "nodes"
MILESTONES_KEY = PREFIX + "milestones"
MAX_ENTRIES = 200_000
"""Stream entries kept (a batch holds up to 500 records)."""
PAGE = 500

T = TypeVar("T")


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RedisRecordStore(RecordStore):
    """Records and lag in streams, the registry and milestones in hashes, on the backend's client."""

    def __init__(self, url: str, backend: Backend) -> None:
        super().__init__(url)
        client = getattr(backend, "client", None)
        if client is None or not hasattr(client, "xadd"):
            raise ConfigError(f"the backend for {self.redacted_url} has no Redis client to keep records in")
        self._backend = backend
        self._client = client

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except RedisError as exc:  # the backend translates only its own calls
            raise BackendUnavailable(
                f"migration record store {self.redacted_url}: {what}: {type(exc).__name__}: {exc}") from None

    def _xadd(self, key: str, payload: str) -> None:
        self._call("append", lambda: self._client.xadd(key, {"b": payload}, maxlen=MAX_ENTRIES, approximate=True))

    def _entries(self, key: str, since: float | None) -> Iterator[Any]:
        start = "-" if since is None else str(int(since * 1000))
        while True:
            page = self._call("read", lambda s=start: self._client.xrange(key, s, "+", PAGE))  # type: ignore[misc]
            for _, fields in page:
                yield from json.loads(_text(fields.get(b"b", fields.get("b", b"[]"))))
            if len(page) < PAGE:
                return
            start = "(" + _text(page[-1][0])

    def append(self, records: Sequence[Record]) -> None:
        if records:
            self._xadd(RECORDS_KEY, json.dumps([r.to_values() for r in records], separators=(",", ":")))

    def records(self, since: float | None = None) -> Iterator[Record]:
        for values in self._entries(RECORDS_KEY, since):
            record = Record.from_values(values)
            if since is None or record.ts >= since:
                yield record

    def append_lag(self, samples: Sequence[LagSample]) -> None:
        if samples:
            self._xadd(LAG_KEY, json.dumps([list(astuple(s)) for s in samples], separators=(",", ":")))

    def lag(self, since: float | None = None) -> list[LagSample]:
        samples = [LagSample(*values) for values in self._entries(LAG_KEY, since)]
        return sorted((s for s in samples if since is None or s.minute >= since), key=lambda s: s.minute)

    def beat(self, info: NodeInfo) -> None:
        self._call("heartbeat", lambda: self._client.hset(NODES_KEY, info.node, json.dumps(asdict(info))))

    def leave(self, node: str) -> None:
        self._call("leave", lambda: self._client.hdel(NODES_KEY, node))

    def nodes(self) -> list[NodeInfo]:
        raw = self._call("nodes", lambda: self._client.hgetall(NODES_KEY))
        return sorted((NodeInfo(**json.loads(_text(v))) for v in raw.values()), key=lambda n: n.node)

    def set_milestone(self, key: str, value: float, *, only_if_absent: bool = False) -> None:
        setter = self._client.hsetnx if only_if_absent else self._client.hset
        self._call("milestone", lambda: setter(MILESTONES_KEY, key, repr(value)))

    def milestone(self, key: str) -> float | None:
        value = self._call("milestone", lambda: self._client.hget(MILESTONES_KEY, key))
        return None if value is None else float(_text(value))

    def close(self) -> None:
        self._backend.close()
