"""Both record stores (SQLite via SQLAlchemy, Redis via redis-py) keep records, nodes and milestones."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lockapi_migration.records.model import DENIED, GRANTED, Record, Side
from lockapi_migration.records.store import BACKFILL_DONE, LagSample, NodeInfo, RecordStore, open_record_store

from lockapi import BackendUnavailable, ConfigError
from tests.servers.common import free_port
from tests.servers.redis import redis_server


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    if request.param == "sqlite":
        opened = open_record_store(f"sqlite:///{tmp_path / 'r.sqlite3'}")
        yield opened
        opened.close()
    else:
        with redis_server(password="s3cret") as server:
            opened = open_record_store(server.url + "/1")
            assert "s3cret" not in opened.redacted_url
            yield opened
            opened.close()


def test_records_round_trip_and_since(store: RecordStore) -> None:
    hostile = "x'); DROP TABLE lockapi_migration_records; --\u00e9"
    first = Record(1000.0, "n1", "shadow", "acquire", hostile, "h1", 5.0, Side(GRANTED, 7, 0.001),
                   Side(DENIED, None, 0.002, None, 1.5), 0.01, "")
    second = Record(2000.0, "n2", "dual", "release", "b", "h2", None, Side("true"), Side(error="BackendUnavailable"))
    store.append([first, second])
    assert list(store.records()) == [first, second]
    assert list(store.records(since=1500.0)) == [second]


def test_nodes_and_milestones(store: RecordStore) -> None:
    store.beat(NodeInfo("a", "off", 1.0, 2.0))
    store.beat(NodeInfo("a", "shadow", 1.0, 3.0))
    store.beat(NodeInfo("b", "off", 1.0, 2.0))
    assert store.nodes() == [NodeInfo("a", "shadow", 1.0, 3.0), NodeInfo("b", "off", 1.0, 2.0)]
    store.leave("b")
    assert [n.node for n in store.nodes()] == ["a"]
    assert store.milestone(BACKFILL_DONE) is None
    store.set_milestone(BACKFILL_DONE, 10.0, only_if_absent=True)
    store.set_milestone(BACKFILL_DONE, 20.0, only_if_absent=True)
    assert store.milestone(BACKFILL_DONE) == 10.0
    store.set_milestone(BACKFILL_DONE, 30.0)
    assert store.milestone(BACKFILL_DONE) == 30.0


def test_lag_samples_round_trip(store: RecordStore) -> None:
    first = LagSample("n1", 60.0, 10, 0.001, 0.01, 0.02, 0, 0, 0.0, 1.0)
    second = LagSample("n2", 120.0, 5, 0.5, 2.0, 3.0, 2, 1, 0.4, 1.0)
    store.append_lag([first, second])
    assert store.lag() == [first, second]
    assert store.lag(since=100.0) == [second]


def test_the_store_connects_with_its_backends_set_up(tmp_path: Path) -> None:
    """Issue #19 (4): the stores reuse lockapi's backend for their URL (its options and timeout) instead of
    a copy with a hard-coded 10 s timeout: a URL option reaches the backend, a misspelt one is refused."""
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    opened = open_record_store(url + "?timeout=0.75")
    try:
        assert opened._backend.config.timeout == 0.75  # type: ignore[attr-defined]
    finally:
        opened.close()
    with pytest.raises(ConfigError, match="colour"):
        open_record_store(url + "?colour=blue")


def test_an_unreachable_redis_store_is_unavailable_within_its_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        store = open_record_store(f"redis://127.0.0.1:{free_port()}?timeout=0.5")
        store.nodes()
    assert time.monotonic() - started < 5


def test_the_store_takes_the_callers_timeout_unless_its_url_sets_one(tmp_path: Path) -> None:
    """A migration node's store answers within connect()'s timeout (it used the store URL's default, 5 s)."""
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    for opened, expected in ((open_record_store(url, timeout=1.25), 1.25),
                             (open_record_store(url + "?timeout=0.75", timeout=1.25), 0.75)):
        try:
            assert opened._backend.config.timeout == expected  # type: ignore[attr-defined]
        finally:
            opened.close()
