"""MigrationBackend on memory:// pairs: what the application sees in each phase, and what is recorded."""

from __future__ import annotations

import socket
import time

import pytest
from lockapi_migration.records.model import DROPPED, GRANTED
from lockapi_migration.strategies.dual import R_MARGIN
from lockapi_migration.tooling.classify import Verdict, classify

import lockapi
from lockapi import BackendUnavailable, Capability, Job, LockTimeout
from tests.migration.conftest import Fleet, backend_of
from tests.servers.common import free_port


def test_off_is_plain_h_and_records_nothing(fleet: Fleet) -> None:
    node = fleet.node("off")
    with node.acquire("a", ttl=5) as lease:
        assert fleet.h().inspect("a").token == lease.token  # type: ignore[union-attr]
        assert fleet.r().inspect("a") is None
    assert fleet.records() == []


def test_shadow_returns_h_decisions_and_mirrors_everything_to_r(fleet: Fleet) -> None:
    node, r = fleet.node("shadow"), fleet.r()
    lease = node.acquire("a", ttl=30)
    backend_of(node).flush()
    held_on_r = r.inspect("a")
    assert held_on_r is not None and held_on_r.holder == lease.holder  # same holder id on both sides
    assert held_on_r.token > lease.token  # R's counter was floored to H's token first
    assert lease.extend(30) and lease.release()
    backend_of(node).flush()
    assert r.inspect("a") is None  # the shadow release used R's own token
    permit = node.semaphore("s", 2).acquire(ttl=30)
    node.backend.mark_done("m", 60)
    permit.release()
    ops = [(rec.op, rec.h.decision, rec.r.decision) for rec in fleet.records()]
    assert ops == [("acquire", "granted", "granted"), ("extend", "true", "true"), ("release", "true", "true"),
                   ("permit_acquire", "granted", "granted"), ("mark_done", "ok", "ok"),
                   ("permit_release", "true", "true")]
    assert fleet.r().backend.done(["m"]) == {"m"}


def test_shadow_false_grant_is_recorded_and_released_on_r_at_once(fleet: Fleet) -> None:
    legacy = fleet.h()  # an app on the old config holds the name on H only
    assert legacy.acquire("x", ttl=60)
    node = fleet.node("shadow")
    assert node.try_acquire("x") is None  # the application sees H's decision
    records = fleet.records()
    assert fleet.r().inspect("x") is None  # R never holds what H does not
    [item] = classify(records)
    assert (item.record.h.decision, item.record.r.decision) == ("denied", GRANTED)
    assert item.verdict is Verdict.FALSE_GRANT


def test_shadow_never_fails_the_caller_when_r_is_down(fleet: Fleet) -> None:
    node = fleet.node("shadow", target=f"redis://127.0.0.1:{free_port()}?timeout=0.5")
    with node.acquire("a", ttl=5):
        pass
    jobs = node.jobs()
    job = Job("j")
    assert jobs.lock_many(job, [1, 2]) == [1, 2]
    jobs.successfully_processed(job, 1)
    jobs.unlock(job, 2)
    classified = classify(fleet.records())
    assert [c.verdict for c in classified if c.record.op in ("acquire", "acquire_many", "mark_done")] == [
        Verdict.ERROR_R] * 4
    # releases of leases R never granted are not compared (nothing to release there)
    assert {c.verdict for c in classified} == {Verdict.ERROR_R, Verdict.UNCOMPARED}


def test_shadow_queue_full_drops_and_counts(fleet: Fleet) -> None:
    node = fleet.node("shadow", shadow_workers=1, shadow_queue=1,
                      target=f"redis://127.0.0.1:{free_port()}?timeout=0.5")
    for i in range(20):
        assert node.try_acquire(f"n{i}", ttl=5) is not None
    dropped = backend_of(node).stats()["shadow_dropped"]
    assert dropped > 0
    records = fleet.records()
    assert sum(r.r.error == DROPPED for r in records) == dropped
    assert all(r.h.decision == GRANTED for r in records)


def test_dual_needs_both_and_returns_r_tokens_above_h(fleet: Fleet) -> None:
    h, r = fleet.h(), fleet.r()
    for _ in range(5):
        h.acquire("a", ttl=5).release()  # H's counter is ahead of R's
    node = fleet.node("dual")
    lease = node.acquire("a", ttl=30)
    assert lease.token > 5
    assert r.inspect("a").token == lease.token  # type: ignore[union-attr]
    assert h.inspect("a") is not None
    assert h.try_acquire("a") is None and r.try_acquire("a") is None
    assert lease.is_held() and lease.extend(30) and lease.release()
    assert h.inspect("a") is None and r.inspect("a") is None


def test_dual_asks_r_once_while_r_is_not_behind_and_refloors_it_when_it_is(fleet: Fleet) -> None:
    """Steady state: one call to H, one to R, no counter floored (R's token equals H's, so H's next is
    above it). R behind H (a shadow node took the name on H meanwhile): R's low grant is given back, R
    floored R_MARGIN above H's token, and H floored above R's new token, so a shadow node's next H token
    is above it."""
    node = fleet.node("dual")
    first = node.acquire("steady", ttl=30)
    assert first.release()
    second = node.acquire("steady", ttl=30)
    assert second.token == first.token + 1 and second.release()
    h = fleet.h()
    for _ in range(3):
        h.acquire("steady", ttl=5).release()  # H ahead of R, as after a shadow node's acquires
    behind = node.acquire("steady", ttl=30)
    assert behind.token >= second.token + 3 + R_MARGIN
    assert fleet.r().inspect("steady").token == behind.token  # type: ignore[union-attr]
    assert behind.release()
    later = h.acquire("steady", ttl=5)
    assert later.token > behind.token and later.release()
    rows = [(rec.h.token, rec.r.token) for rec in fleet.records() if rec.op == "acquire" and rec.name == "steady"]
    assert rows[0][0] == rows[0][1] and rows[1][0] == rows[1][1], rows  # no floor in the steady state
    assert rows[2][1] > rows[2][0] + R_MARGIN, rows


def test_dual_denial_on_r_releases_h(fleet: Fleet) -> None:
    r_holder = fleet.r().acquire("a", ttl=60)
    node = fleet.node("dual")
    with pytest.raises(LockTimeout):
        node.acquire("a", ttl=5, wait=0.3)
    assert fleet.h().inspect("a") is None  # the first grant was given back
    r_holder.release()
    assert node.try_acquire("a") is not None


def test_dual_fails_closed_when_r_is_down(fleet: Fleet) -> None:
    node = fleet.node("dual", target=f"redis://127.0.0.1:{free_port()}?timeout=0.5")
    with pytest.raises(BackendUnavailable):
        node.try_acquire("a")
    assert fleet.h().inspect("a") is None


def test_dual_fails_closed_when_h_is_down(fleet: Fleet) -> None:
    options = fleet.options("dual", source=f"redis://127.0.0.1:{free_port()}?timeout=0.5")
    node = fleet.node("dual", **{k: options[k] for k in ("source",)})
    with pytest.raises(BackendUnavailable):
        node.try_acquire("a")
    assert fleet.r().inspect("a") is None


def test_adjacent_phases_exclude_each_other(fleet: Fleet) -> None:
    pairs = [("off", "shadow"), ("shadow", "dual"), ("dual", "cutover"), ("cutover", "done")]
    for index, (first, second) in enumerate(pairs):
        a, b = fleet.node(first), fleet.node(second)
        name = f"pair-{index}"
        lease = a.acquire(name, ttl=30)
        assert b.try_acquire(name) is None, (first, second)
        lease.release()
        backend_of(a).flush()
        lease = b.acquire(name, ttl=30, wait=5)
        assert a.try_acquire(name) is None, (second, first)
        lease.release()
        backend_of(b).flush()
        a.close()
        b.close()


def test_tokens_never_decrease_across_the_whole_migration(fleet: Fleet) -> None:
    """Rolling through every phase, mixed pairs included, a name's tokens strictly increase."""
    tokens: list[int] = []
    sequence = [["off"], ["off", "shadow"], ["shadow"], ["shadow", "dual"], ["dual"], ["dual", "cutover"],
                ["cutover"], ["cutover", "done"], ["done"]]
    for step in sequence:
        nodes = [fleet.node(phase) for phase in step]
        for _ in range(3):
            for node in nodes:
                for take in (lambda n: n.acquire("lock", ttl=30),
                             lambda n: n.semaphore("sem", 1).acquire(ttl=30)):
                    lease = take(node)
                    tokens.append(lease.token)
                    lease.release()
                    backend_of(node).flush()
        for node in nodes:
            node.close()
    lock_tokens, sem_tokens = tokens[0::2], tokens[1::2]
    assert lock_tokens == sorted(set(lock_tokens)), lock_tokens
    assert sem_tokens == sorted(set(sem_tokens)), sem_tokens


def test_done_markers_written_in_off_are_honoured_in_dual_and_cutover(fleet: Fleet) -> None:
    job = Job("j", done_ttl=600)
    off = fleet.node("off")
    jobs = off.jobs()
    assert jobs.lock(job, 1)
    jobs.successfully_processed(job, 1)
    off.close()
    for phase in ("dual", "cutover"):
        node = fleet.node(phase)
        jobs = node.jobs()
        assert jobs.lock_many(job, [1, 2]) == [2], phase
        assert jobs.lock(job, 1) is False
        jobs.unlock(job, 2)
        node.close()
    marker_reads = [c for c in classify(fleet.records()) if c.record.op == "done" and c.record.name == "j:1"]
    assert marker_reads and all(c.verdict is Verdict.MARKER_MISMATCH for c in marker_reads)


def test_cutover_shadows_h(fleet: Fleet) -> None:
    node = fleet.node("cutover")
    lease = node.acquire("c", ttl=30)
    backend_of(node).flush()
    assert fleet.r().inspect("c").token == lease.token  # type: ignore[union-attr]
    h_info = fleet.h().inspect("c")
    assert h_info is not None and h_info.token > lease.token  # H floored above R: rollback stays monotonic
    lease.release()
    records = fleet.records()
    assert [(x.op, x.r.decision, x.h.decision) for x in records] == [
        ("acquire", GRANTED, GRANTED), ("release", "true", "true")]


def test_capabilities_are_the_phases(fleet: Fleet) -> None:
    """Issue #19 (1): what a migrating node declares is what it can do in its phase. Cutover's batch with
    skip_done also reads H's markers, so it is not one round trip (no atomic_batch)."""
    h_caps = fleet.h().capabilities
    expected = {"off": h_caps, "shadow": h_caps, "dual": h_caps - {Capability.FAIR, Capability.ATOMIC_BATCH},
                "cutover": h_caps - {Capability.ATOMIC_BATCH}, "done": h_caps}  # memory H and R: the same set
    for phase, caps in expected.items():
        node = fleet.node(phase)
        assert node.capabilities == caps, phase
        node.close()


def test_a_down_record_store_fails_the_node_within_its_timeout(fleet: Fleet) -> None:
    """The store (and its fleet registry, joined when the node opens) answers within the node's timeout:
    it used the store URL's default (5 s) whatever connect() was given."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        port = silent.getsockname()[1]
        options = fleet.options("shadow", record=f"redis://127.0.0.1:{port}", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            lockapi.open_backend("migration://", options)
        assert time.monotonic() - started < 2.5
