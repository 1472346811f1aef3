"""Start the local servers the benchmarks run against (with the test launchers) and record versions.

A server that cannot start (binary or jar missing) is left out and noted; the rest still run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.benchmarks.bench_subjects import Env

ALL_GROUPS = ("memory", "sqlite", "redis", "postgresql", "mariadb", "hazelcast")


def _start(stack: contextlib.ExitStack, group: str, env: Env, notes: list[str]) -> bool:
    """Start the server of ``group`` into ``env``; False (with a note) if it cannot."""
    try:
        if group == "memory":
            env["memory_url"] = "memory://bench"
        elif group == "sqlite":
            folder = stack.enter_context(_temp("sqlite"))
            env["sqlite_url"] = f"sqlite:///{folder / 'bench.db'}"
        elif group == "redis":
            from tests.servers.redis import redis_server

            server = stack.enter_context(redis_server())
            env["redis_port"] = server.port
            env["redis_url"] = f"redis://127.0.0.1:{server.port}"
            env["tooz_redis_url"] = f"redis://127.0.0.1:{server.port}"
        elif group == "postgresql":
            from tests.servers.postgres import postgres_server

            pg = stack.enter_context(postgres_server())
            env["pg_port"] = pg.port
            env["pg_url"] = pg.url
            env["tooz_pg_url"] = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        elif group == "mariadb":
            from tests.servers.mariadb import mariadb_server

            maria = stack.enter_context(mariadb_server())
            env["maria_port"] = maria.port
            env["maria_url"] = maria.url
            env["tooz_maria_url"] = f"mysql://root@127.0.0.1:{maria.port}/lockapi"
        elif group == "hazelcast":
            from tests.servers.hazelcast import MAP_VERSION, hazelcast_cluster

            cluster = stack.enter_context(hazelcast_cluster(MAP_VERSION, 1))
            env["hz_url"] = cluster.url("map")
            env["hz_cluster"] = cluster.cluster_name
            env["hz_members"] = [f"127.0.0.1:{p}" for p in cluster.ports]
            env["hz_version"] = MAP_VERSION
        else:
            raise ValueError(group)
    except BaseException as exc:  # the launchers call pytest.skip() (a BaseException) when a binary is missing
        if isinstance(exc, KeyboardInterrupt):
            raise
        notes.append(f"{group}: not measured, its server did not start ({type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else ''})")
        return False
    return True


@contextlib.contextmanager
def _temp(prefix: str) -> Iterator[Path]:
    from tests.servers.common import temp_dir

    with temp_dir(f"bench-{prefix}") as folder:
        yield folder


@contextlib.contextmanager
def servers(groups: Sequence[str]) -> Iterator[tuple[Env, list[str]]]:
    """Start the servers of ``groups``; yield (env, notes); stop them all at exit."""
    env: Env = {"groups": []}
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        for group in groups:
            if _start(stack, group, env, notes):
                env["groups"].append(group)
        yield env, notes


def _run(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def versions(env: Env) -> dict[str, str]:
    """Versions of the servers, the client libraries and the machine."""
    found: dict[str, str] = {}
    groups = env.get("groups", ())
    if "redis" in groups:
        found["redis-server"] = _run(["redis-server", "--version"])
    if "postgresql" in groups:
        from tests.servers.postgres import find_pg_bin

        pg_bin = find_pg_bin()
        found["PostgreSQL"] = _run([str(pg_bin / "postgres"), "--version"]) if pg_bin else "unknown"
    if "mariadb" in groups:
        from tests.servers.common import find_binary
        from tests.servers.mariadb import SBIN

        found["MariaDB"] = _run([find_binary("mariadbd", *SBIN) or "mariadbd", "--version"])
    if "hazelcast" in groups:
        found["Hazelcast"] = f"{env.get('hz_version')} community (one member), {_run(['java', '-version'])}"
    found["Python"] = sys.version.split()[0]
    for dist in ("lockapi", "redis", "hiredis", "python-redis-lock", "pottery", "tooz", "sherlock", "SQLAlchemy",
                 "psycopg", "psycopg2-binary", "PyMySQL", "hazelcast-python-client"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "os": platform.platform(terse=True)}
