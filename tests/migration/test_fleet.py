"""The fleet registry: heartbeats, the adjacency guard, and refusal messages."""

from __future__ import annotations

import re
import time

import pytest
from lockapi_migration.fleet import PhaseConflict, live_nodes
from lockapi_migration.records.store import SHADOW_STARTED, NodeInfo

import lockapi
from tests.migration.conftest import Fleet


def test_a_node_that_skips_a_phase_is_refused_naming_the_blockers(fleet: Fleet) -> None:
    fleet.node("off")
    fleet.node("shadow")
    with pytest.raises(PhaseConflict) as refused:
        fleet.node("dual")
    assert re.search(r"node-1/[0-9a-f]{8} \(off\)", str(refused.value))
    assert "node-2" not in str(refused.value)  # shadow is adjacent to dual
    store = fleet.store()
    try:
        assert sorted(n.node.split("/")[0] for n in live_nodes(store)) == ["node-1", "node-2"]  # the refused node left
    finally:
        store.close()


def test_a_clean_shutdown_leaves_the_registry_at_once(fleet: Fleet) -> None:
    first = fleet.node("off")
    first.close()
    fleet.node("shadow")
    with pytest.raises(PhaseConflict, match=r"node-2/\w+ \(shadow\)"):
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


def test_two_managers_in_one_process_are_two_nodes(fleet: Fleet) -> None:
    """Issue #13 (5): node ids were host:pid, so a second manager in the same process shared the first's
    registry entry; a cutover node next to a live shadow node was not refused and both held one name."""
    options = fleet.options("shadow")
    del options["node"]  # the default identity
    shadow = lockapi.LockManager(lockapi.open_backend("migration://", options), url="shadow")
    fleet.managers.append(shadow)
    options = fleet.options("cutover")
    del options["node"]
    with pytest.raises(PhaseConflict, match=r"\(shadow\)"):
        lockapi.open_backend("migration://", options)
    assert shadow.try_acquire("still-works") is not None


def test_same_label_on_two_hosts_is_two_nodes(fleet: Fleet) -> None:
    """Two containers with one hostname whose app is PID 1 have the same host:pid: still two nodes."""
    fleet.node("shadow", node="web:1")
    with pytest.raises(PhaseConflict, match=r"web:1/[0-9a-f]+ \(shadow\)"):
        fleet.node("cutover", node="web:1")
    store = fleet.store()
    try:
        [entry] = live_nodes(store)
        assert entry.node.startswith("web:1/")
    finally:
        store.close()
