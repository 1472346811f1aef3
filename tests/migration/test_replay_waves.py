"""The shadow replay's waves (``Replayer.drive``) on a real Redis target: a name's replays stay in order,
a release lets the name's next acquire share its round trip, different names share one, and one replay
that fails does not stop the ones queued behind it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from lockapi_migration.phases import H, R
from lockapi_migration.records.model import GRANTED, TRUE, Side
from lockapi_migration.records.sink import RecordSink
from lockapi_migration.records.store import RecordStore, open_record_store
from lockapi_migration.replay.lag import LagMeter
from lockapi_migration.replay.replayer import Plan, Replayer
from lockapi_migration.strategies.operations import Recorder
from lockapi_redis import RedisBackend

from lockapi.spi import BackendConfig, Call, Options
from tests.servers.redis import RedisServer


class CountingRedis(RedisBackend):
    """The real Redis backend, remembering the size of every batch it was given."""

    batches: list[int]

    def run_calls(self, calls: Sequence[Call]) -> list[Any]:
        self.batches.append(len(calls))
        return super().run_calls(calls)


@pytest.fixture
def setup(redis_standalone: RedisServer, tmp_path: Path) -> Iterator[tuple[Replayer, CountingRedis, RecordSink,
                                                                         RecordStore]]:
    shadow = CountingRedis(BackendConfig(url=redis_standalone.url, scheme="redis", options=Options({}), timeout=5.0))
    shadow.batches = []
    store = open_record_store(f"sqlite:///{tmp_path / 'records.sqlite3'}")
    sink = RecordSink(store)
    replayer = Replayer(lambda: None, shadow, H, R, Recorder(sink, "n", "shadow"), LagMeter("n", 60.0, sink.put_lag),
                        floor=True)
    yield replayer, shadow, sink, store
    sink.close()
    shadow.close()
    store.close()


def test_one_names_cycles_share_round_trips_and_stay_in_order(
        setup: tuple[Replayer, CountingRedis, RecordSink, RecordStore]) -> None:
    replayer, shadow, sink, store = setup
    name, others = f"w:{uuid.uuid4().hex}", [f"w:{uuid.uuid4().hex}" for _ in range(5)]
    plans: list[tuple[str, Plan]] = []
    now = time.monotonic()
    for i in range(10):
        holder = f"h{i}"
        plans.append((name, replayer.acquire(now, "lock", name, holder, 30.0, 1, Side(GRANTED, 100 + i), 1.0 + i)))
        plans.append((name, replayer.lease(now, "lock", "release", name, holder, None, Side(TRUE), 1.5 + i)))
    plans += [(o, replayer.acquire(now, "lock", o, "x", 30.0, 1, Side(GRANTED, 7), 1.0)) for o in others]
    errors: list[BaseException] = []
    replayer.drive(plans, errors.append)
    assert errors == []
    sink.flush()
    mine = sorted((r for r in store.records() if r.name == name), key=lambda r: r.ts)
    assert [(r.op, r.r.decision) for r in mine] == [("acquire", GRANTED), ("release", TRUE)] * 10
    tokens = [r.r.token for r in mine if r.op == "acquire"]
    assert tokens == sorted(tokens) and len(set(tokens)) == 10 and tokens[0] is not None and tokens[0] > 100
    assert {r.name for r in store.records() if r.r.decision == GRANTED} >= set(others)
    # 20 replays of one name (+ one floor) and 5 of others (a floor and an acquire each): 10 + 2 waves
    # (a release rides with the next acquire), not one round trip per call
    assert sum(shadow.batches) == 31 and len(shadow.batches) <= 12
    assert shadow.inspect(name) is None


def test_a_failing_replay_does_not_stop_the_ones_behind_it(
        setup: tuple[Replayer, CountingRedis, RecordSink, RecordStore]) -> None:
    replayer, _, sink, store = setup
    name = f"w:{uuid.uuid4().hex}"
    plans = [(name, replayer.acquire(time.monotonic(), "no such kind", name, "a", 30.0, 1, Side(GRANTED, 5), 1.0)),
             (name, replayer.acquire(time.monotonic(), "lock", name, "b", 30.0, 1, Side(GRANTED, 6), 2.0))]
    errors: list[BaseException] = []
    replayer.drive(plans, errors.append)
    assert len(errors) == 1 and isinstance(errors[0], KeyError)
    sink.flush()
    assert [(r.holder, r.r.decision) for r in store.records() if r.name == name] == [("b", GRANTED)]
