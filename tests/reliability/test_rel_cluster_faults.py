"""Losing a member of a replicated deployment: Hazelcast 3-member cluster, Redis Sentinel, Redis Cluster.

Expected outcomes:

* Hazelcast (map mode, 5.7, 3 members, one synchronous backup per partition): a member killed while 8
  processes run the checker changes nothing the checker can see (no overlap, no lost update, tokens
  increase; calls that straddle the crash may fail with BackendUnavailable and are retried), and locks
  held before the crash are still held after it.
* Redis Sentinel: the master killed; calls fail with BackendUnavailable (each within ``timeout``, no
  hang) until the sentinels promote the replica, then work again, with larger tokens.
* Redis Cluster (3 masters + 3 replicas): a master killed; the same, once its replica takes over.

Each test starts its own servers and stops them, by pid.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lockapi
from lockapi import BackendUnavailable, LockError
from tests.reliability.checker import start_checker
from tests.servers.common import find_binary, free_ports, temp_dir, wait_until
from tests.servers.hazelcast import MAP_VERSION, hazelcast_cluster
from tests.servers.redis import RedisCluster, RedisServer, _client, _cluster_ok, sentinel_group

TIMEOUT = 2.0
SLACK = 2.0


def until_recovered(mgr: lockapi.LockManager, name: str, within: float = 90.0) -> tuple[lockapi.Lease, dict]:
    """Acquire ``name`` until it works; every failed attempt must be BackendUnavailable within timeout."""
    started = time.monotonic()
    stats = {"failures": 0, "slowest_failure": 0.0}
    while True:
        t0 = time.monotonic()
        try:
            lease = mgr.acquire(name, ttl=30, wait=1)
            stats["recovered_after"] = time.monotonic() - started
            return lease, stats
        except LockError as exc:
            took = time.monotonic() - t0
            assert isinstance(exc, BackendUnavailable), f"during the failover: {exc!r}"
            assert took <= TIMEOUT + 1 + SLACK, f"a failing call took {took:.2f}s with timeout={TIMEOUT}"
            stats["failures"] += 1
            stats["slowest_failure"] = max(stats["slowest_failure"], took)
        assert time.monotonic() - started < within, f"no recovery within {within}s: {stats}"
        time.sleep(0.1)


@pytest.mark.slow
def test_hazelcast_member_killed_under_the_checker(tmp_path: Path, name: str) -> None:
    with hazelcast_cluster(MAP_VERSION, 3) as cluster:
        url = cluster.url("map")
        with lockapi.connect(url) as mgr, lockapi.connect(url) as other:
            held = {f"{name}:held:{i}": mgr.acquire(f"{name}:held:{i}", ttl=120) for i in range(20)}
            run = start_checker(url, {}, tmp_path / "checker", name=name, workers=8, rounds=15, ttl=10,
                                tolerate_unavailable=True)
            wait_until(lambda: run.record.state()["accepted"] >= 30, 120, "the checker to get going")
            cluster.kill(2)
            killed_at_grant = run.record.state()["accepted"]
            verdict = run.finish()
            print(f"\nhazelcast member killed after {killed_at_grant} grants: {len(verdict.grants)} grants, "
                  f"errors {verdict.errors}, {verdict.rate:.0f} grants/s")
            assert verdict.problems(expected_grants=8 * 15) == []
            assert verdict.record["rejected"] == 0
            still = [n for n in held if other.try_acquire(n) is not None]
            assert still == [], f"{len(still)} of 20 held locks were free after the member died"
            assert all(lease.release() is True for lease in held.values())
            again = {n: other.acquire(n, ttl=30, wait=5) for n in held}
            assert all(again[n].token > held[n].token for n in held)


@pytest.mark.slow
def test_sentinel_failover(name: str) -> None:
    with sentinel_group() as group, lockapi.connect(group.url, timeout=TIMEOUT) as mgr:
        before = mgr.acquire(name, ttl=30)
        assert before.release() is True
        group.master.process.kill()
        lease, stats = until_recovered(mgr, name)
        print(f"\nsentinel failover: {stats}")
        assert lease.token > before.token
        assert lease.release() is True
        master = _client(group.sentinel_ports[0]).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", group.service)
        assert int(master[1]) == group.replica.port, "the sentinels did not promote the replica"


def low_free_ports(count: int) -> list[int]:
    """Free ports <= 55535: a cluster node also listens on its port + 10000."""
    ports: list[int] = []
    while len(ports) < count:
        ports += [p for p in free_ports(count) if p <= 55535 and p + 10000 not in ports and p not in ports]
    return ports[:count]


@contextlib.contextmanager
def replicated_cluster() -> Iterator[RedisCluster]:
    """3 masters and 3 replicas (``redis-cli --cluster create --cluster-replicas 1``)."""
    cli = find_binary("redis-cli", "/usr/bin")
    assert cli is not None, "redis-cli missing (comes with redis-server)"
    with temp_dir("redis-rcluster") as folder:
        nodes: list[RedisServer] = []
        try:
            for port in low_free_ports(6):
                node_dir = folder / str(port)
                node_dir.mkdir()
                node = RedisServer(port=port, folder=node_dir, extra_args=[
                    "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout", "2000", "--cluster-replica-validity-factor", "0"])
                nodes.append(node)
                node.start()
            subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                            "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True,
                           timeout=60)
            for node in nodes:
                wait_until(lambda node=node: _cluster_ok(node), 60, f"cluster node :{node.port} ok")
            yield RedisCluster(nodes)
        finally:
            for node in nodes:
                node.stop()


def _master_of(cluster: RedisCluster, key: str) -> RedisServer:
    asker = next(n for n in cluster.nodes if n.process is not None and n.process.alive())
    client = asker.client()
    try:
        slot = client.execute_command("CLUSTER KEYSLOT", key)
        for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return next(n for n in cluster.nodes if n.port == int(primary[1]))
    finally:
        client.close()
    raise AssertionError(f"no master for slot of {key}")


@pytest.mark.slow
def test_redis_cluster_master_lost(name: str) -> None:
    with replicated_cluster() as cluster, lockapi.connect(cluster.url, timeout=TIMEOUT) as mgr:
        before = mgr.acquire(name, ttl=30)
        assert before.release() is True
        victim = _master_of(cluster, f"lockapi:{{{name}}}:lock")
        assert victim.process is not None
        victim.process.kill()
        lease, stats = until_recovered(mgr, name)
        print(f"\nredis cluster master :{victim.port} killed: {stats}")
        assert lease.token > before.token
        assert lease.release() is True
        assert _master_of(cluster, f"lockapi:{{{name}}}:lock") is not victim
