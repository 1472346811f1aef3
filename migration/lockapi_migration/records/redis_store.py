"""The record store on Redis (redis-py): a stream of records, a hash of nodes, a hash of milestones.

Stream ids are the server's millisecond time at insert, which is never before a record's ``ts`` (records
are written after they happen), so ``records(since)`` is an XRANGE from ``since`` filtered on ``ts``. The
stream is capped (approximately) at ``MAX_RECORDS`` entries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict

import redis
import redis.exceptions

from lockapi.spi import BackendUnavailable
from lockapi_migration.records.model import Record
from lockapi_migration.records.store import NodeInfo, RecordStore

PREFIX = "lockapi:migration:"
RECORDS_KEY = PREFIX + "records"
NODES_KEY = PREFIX + "nodes"
MILESTONES_KEY = PREFIX + "milestones"
MAX_RECORDS = 2_000_000
PAGE = 5000


class RedisRecordStore(RecordStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10,
                                            decode_responses=True)

    def _call(self, what: str, fn: object, *args: object, **kwargs: object) -> object:
        try:
            return fn(*args, **kwargs)  # type: ignore[operator]
        except redis.exceptions.RedisError as exc:
            raise BackendUnavailable(f"migration record store {self.redacted_url}: {what}: {exc}") from None

    def append(self, records: Sequence[Record]) -> None:
        if not records:
            return
        pipe = self._client.pipeline(transaction=False)
        for record in records:
            pipe.xadd(RECORDS_KEY, {"r": json.dumps(record.to_row())}, maxlen=MAX_RECORDS, approximate=True)
        self._call("append", pipe.execute)

    def records(self, since: float | None = None) -> Iterator[Record]:
        start = "-" if since is None else str(int(since * 1000))
        while True:
            page = self._call("read", self._client.xrange, RECORDS_KEY, start, "+", PAGE)
            assert isinstance(page, list)
            for _, fields in page:
                record = Record.from_row(json.loads(fields["r"]))
                if since is None or record.ts >= since:
                    yield record
            if len(page) < PAGE:
                return
            start = "(" + page[-1][0]

    def beat(self, info: NodeInfo) -> None:
        self._call("heartbeat", self._client.hset, NODES_KEY, info.node, json.dumps(asdict(info)))

    def leave(self, node: str) -> None:
        self._call("leave", self._client.hdel, NODES_KEY, node)

    def nodes(self) -> list[NodeInfo]:
        raw = self._call("nodes", self._client.hgetall, NODES_KEY)
        assert isinstance(raw, dict)
        return sorted((NodeInfo(**json.loads(v)) for v in raw.values()), key=lambda n: n.node)

    def set_milestone(self, key: str, value: float, *, only_if_absent: bool = False) -> None:
        setter = self._client.hsetnx if only_if_absent else self._client.hset
        self._call("milestone", setter, MILESTONES_KEY, key, repr(value))

    def milestone(self, key: str) -> float | None:
        value = self._call("milestone", self._client.hget, MILESTONES_KEY, key)
        return None if value is None else float(str(value))

    def close(self) -> None:
        self._client.close()
