"""The migration backend reports each disagreeing record (lockapi.migration.mismatches) and runs its
shadow side as a step span under the caller's span."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lockapi.observability.install import Instrumentation
from tests.migration.conftest import Fleet
from tests.observability.conftest import Otel


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()


def test_a_shadow_false_grant_is_counted_and_the_shadow_step_is_traced(otel: Otel, instrumented: Instrumentation,
                                                                      fleet: Fleet) -> None:
    legacy = fleet.h()  # holds the name on H only: the shadow (R) would grant it
    assert legacy.acquire("invoice:1", ttl=60)
    node = fleet.node("shadow")
    assert node.try_acquire("invoice:1") is None
    with node.acquire("invoice:2", ttl=60):
        pass
    fleet.records()  # flushes the shadow queue
    assert otel.value("lockapi.migration.mismatches", family="invoice", verdict="false_grant", phase="shadow",
                      op="acquire", backend="migration") == 1
    assert otel.value("lockapi.migration.mismatches", family="invoice") == 1  # the agreeing ones are not counted
    [denied] = [s for s in otel.spans("lockapi.try_acquire") if s.attributes["lockapi.lock.name"] == "invoice:1"]
    shadows = [s for s in otel.spans("lockapi.migration.shadow") if s.attributes["lockapi.lock.name"] == "invoice:1"]
    assert len(shadows) == 1 and shadows[0].attributes["lockapi.side"] == "r"
    assert shadows[0].parent is not None and shadows[0].parent.span_id == denied.context.span_id
