"""Servers and targets for the reliability suite.

Each server kind is started once per session (on first use) with the launchers in tests/servers/ and
stopped at the end; tests that stop, restart or kill a server start their own, function-scoped.
``target`` is parametrised over every backend: memory, sqlite, postgresql, mariadb, redis (standalone
and cluster), hazelcast map mode (5.7) and hazelcast cp mode (5.4).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.targets import (
    Target,
    hazelcast_footprint,
    memory_footprint,
    redis_footprint,
    sql_footprint,
)

BACKENDS = ["memory", "sqlite", "postgresql", "mariadb", "redis", "redis-cluster", "hazelcast-map",
            "hazelcast-cp"]
SERVER_BACKENDS = BACKENDS[1:]
_stores = itertools.count()


# -- session servers ---------------------------------------------------------------------------------
# -- targets -----------------------------------------------------------------------------------------
def make_target(kind: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[Target]:
    """A fresh namespace on the (session) server of ``kind``: a new database, store or key prefix."""
    if kind == "memory":
        store = f"reliability-{next(_stores)}"
        yield Target("memory", f"memory://{store}", margin=1.0, processes=False,
                     footprint=memory_footprint(store))
    elif kind == "sqlite":
        url = f"sqlite:///{folder / 'locks.db'}"
        count, conns = sql_footprint(url)
        yield Target("sqlite", url, footprint=count, connections=conns, persistent=True)
    elif kind in ("postgresql", "mariadb"):
        server = request.getfixturevalue("pg" if kind == "postgresql" else "maria")
        url = server.create_database(f"rel_{uuid.uuid4().hex[:12]}")
        count, conns = sql_footprint(url)
        yield Target(kind, url, footprint=count, connections=conns, persistent=True)
    elif kind == "redis":
        server = request.getfixturevalue("redis_standalone")
        server.client().flushall()
        count, conns = redis_footprint(lambda: [server.client()])
        yield Target("redis", server.url, footprint=count, connections=conns)
    elif kind == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster_nodes")
        for node in cluster.nodes:
            node.client().flushall()
        count, conns = redis_footprint(lambda: [n.client() for n in cluster.nodes])
        yield Target("redis-cluster", cluster.url, footprint=count, connections=conns)
    elif kind == "hazelcast-map":
        hz = request.getfixturevalue("hazelcast_member")
        prefix = f"rel{uuid.uuid4().hex[:8]}"
        count, close = hazelcast_footprint(hz.addresses, hz.cluster_name, prefix)
        try:
            # Members keep entry times with one-second resolution: leases end between ttl and ttl + 1 s.
            yield Target("hazelcast-map", hz.url("map") + f"&prefix={prefix}", margin=2.5, footprint=count)
        finally:
            close()
    elif kind == "hazelcast-cp":
        hz = request.getfixturevalue("cp_cluster")
        prefix = f"rel{uuid.uuid4().hex[:8]}"
        # A dead holder's FencedLock is freed when its CP session expires (the launcher sets the session
        # ttl to 10 s, heartbeats every 2 s), not after the lease ttl: documented for cp mode.
        yield Target("hazelcast-cp", hz.url("cp") + f"&prefix={prefix}", margin=3.0, dead_holder_grace=12.0)
    else:
        raise AssertionError(kind)


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    yield from make_target(request.param, request, tmp_path)


@pytest.fixture(params=SERVER_BACKENDS)
def server_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Every backend that other processes can share (the checker runs processes)."""
    yield from make_target(request.param, request, tmp_path)


@pytest.fixture
def name() -> str:
    return f"rel:{uuid.uuid4().hex}"
