"""The fleet registry: heartbeats, the adjacency guard, and refusal messages."""

from __future__ import annotations

import time

import pytest
from lockapi_migration.fleet import PhaseConflict, live_nodes
from lockapi_migration.records.store import SHADOW_STARTED, NodeInfo

from tests.migration.conftest import Fleet


def test_a_node_that_skips_a_phase_is_refused_naming_the_blockers(fleet: Fleet) -> None:
    fleet.node("off")
    fleet.node("shadow")
    with pytest.raises(PhaseConflict) as refused:
        fleet.node("dual")
    assert "node-1 (off)" in str(refused.value)
    assert "node-2" not in str(refused.value)  # shadow is adjacent to dual
    store = fleet.store()
    try:
        assert sorted(n.node for n in live_nodes(store)) == ["node-1", "node-2"]  # the refused node left
    finally:
        store.close()


def test_a_clean_shutdown_leaves_the_registry_at_once(fleet: Fleet) -> None:
    first = fleet.node("off")
    first.close()
    fleet.node("shadow")
    with pytest.raises(PhaseConflict, match=r"node-2 \(shadow\)"):
        fleet.node("cutover")
    fleet.node("dual")


def test_stale_heartbeats_do_not_block(fleet: Fleet) -> None:
    store = fleet.store()
    try:
        now = time.time()
        store.beat(NodeInfo("crashed", "off", now - 100, now - 60))  # never left: heartbeat too old
        fleet.node("dual")
        store.beat(NodeInfo("alive", "off", now, time.time()))
        with pytest.raises(PhaseConflict, match=r"alive \(off\)"):
            fleet.node("cutover")
    finally:
        store.close()


def test_heartbeats_refresh_and_shadow_start_is_recorded_once(fleet: Fleet) -> None:
    node = fleet.node("shadow")
    store = fleet.store()
    try:
        first = store.milestone(SHADOW_STARTED)
        assert first is not None
        [entry] = store.nodes()
        beat = entry.heartbeat
        deadline = time.monotonic() + 10
        while store.nodes()[0].heartbeat == beat and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.nodes()[0].heartbeat > beat
        node.close()
        fleet.node("shadow")
        assert store.milestone(SHADOW_STARTED) == first
    finally:
        store.close()
