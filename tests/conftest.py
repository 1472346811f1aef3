"""Session-wide servers shared by several test folders (each started on first use, stopped at the end).

* ``pg``: PostgreSQL from /usr/lib/postgresql/<major>/bin, run as the postgres user.
* ``maria``: MariaDB from mariadb-install-db + mariadbd.
* ``redis_standalone``: one redis-server; ``redis_cluster_nodes``: a 3-master Redis Cluster.
* ``hazelcast_member``: one community 5.7.0 member (no CP subsystem), for map mode.
* ``cp_cluster``: three community 5.4.0 members with the CP subsystem (cp-member-count 3), for cp mode.

Tests that stop, kill, freeze or reconfigure a server start their own instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.hazelcast import CP_VERSION, MAP_VERSION, HazelcastCluster, hazelcast_cluster
from tests.servers.mariadb import MariaDBServer, mariadb_server
from tests.servers.postgres import PostgresServer, postgres_server
from tests.servers.redis import RedisCluster, RedisServer, redis_cluster, redis_server


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def maria() -> Iterator[MariaDBServer]:
    with mariadb_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_standalone() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_nodes() -> Iterator[RedisCluster]:
    with redis_cluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def hazelcast_member() -> Iterator[HazelcastCluster]:
    with hazelcast_cluster(MAP_VERSION, 1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cp_cluster() -> Iterator[HazelcastCluster]:
    with hazelcast_cluster(CP_VERSION, 3, cp=True) as cluster:
        yield cluster
