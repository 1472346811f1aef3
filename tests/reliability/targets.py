"""What the reliability tests run against: one :class:`Target` per backend, and how to count what it stores.

``Target.footprint()`` counts what the backend keeps for lockapi (keys, rows, map entries), split into
``live`` (held locks and permits, queued waiters) and ``total``; ``connections()`` counts the server's
client connections where the server can tell. Tests compare these before and after.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers.common import ServerProcess, wait_until

Counts = dict[str, int]


@dataclass
class Target:
    id: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    margin: float = 1.5
    """Extra seconds allowed for anything timed on this backend (expiry resolution, slow machine)."""
    processes: bool = True
    """False for in-process backends (memory://): the checker then runs threads."""
    footprint: Callable[[], Counts] = lambda: {}
    connections: Callable[[], int | None] = lambda: None
    persistent: bool = False
    """Held leases survive a server restart."""
    dead_holder_grace: float | None = None
    """Seconds after which a dead holder's lock is free, when that is not its ttl (hazelcast cp mode:
    the CP session's ttl, as docs/backends/hazelcast.md says); None: the ttl."""


# -- footprints --------------------------------------------------------------------------------------
def memory_footprint(store_name: str) -> Callable[[], Counts]:
    def count() -> Counts:
        import lockapi_memory

        store = lockapi_memory._stores.get(store_name)
        if store is None:
            return {"live": 0, "total": 0}
        with store.mutex:
            now = store.clock()
            live = sum(1 for g in store.locks.values() if g.expires > now)
            live += sum(1 for grants in store.permits.values() for g in grants.values() if g.expires > now)
            live += sum(len(q) for q in store.queues.values())
            total = len(store.locks) + len(store.fences) + sum(len(p) for p in store.permits.values())
            total += len(store.done) + sum(len(q) for q in store.queues.values())
        return {"live": live, "total": total}

    return count


def sql_footprint(url: str) -> tuple[Callable[[], Counts], Callable[[], int | None]]:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    dialect = url.split(":", 1)[0].split("+", 1)[0]

    def count() -> Counts:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            if "lockapi_leases" not in tables:
                return {"live": 0, "total": 0}
            total = conn.execute(sa.text("SELECT COUNT(*) FROM lockapi_leases")).scalar_one()
            # a released lease has expiry 0 (its holder is kept, so that a retried release is idempotent)
            live = conn.execute(sa.text("SELECT COUNT(*) FROM lockapi_leases WHERE expires_us <> 0")).scalar_one()
            waiters = conn.execute(sa.text("SELECT COUNT(*) FROM lockapi_waiters")).scalar_one()
            done = conn.execute(sa.text("SELECT COUNT(*) FROM lockapi_done")).scalar_one()
        return {"live": int(live) + int(waiters), "total": int(total) + int(waiters) + int(done)}

    def connections() -> int | None:
        with engine.connect() as conn:
            if dialect == "postgresql":
                value = conn.execute(sa.text(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid()")).scalar_one()
            elif dialect in ("mariadb", "mysql"):
                value = int(conn.execute(sa.text("SHOW STATUS LIKE 'Threads_connected'")).one()[1]) - 1
            else:
                return None
        return int(value)

    return count, connections


def redis_footprint(clients: Callable[[], list[Any]]) -> tuple[Callable[[], Counts], Callable[[], int | None]]:
    live_suffixes = (b":lock", b":sem", b":queue", b":qtime")

    def count() -> Counts:
        live = total = 0
        for client in clients():
            try:
                for key in client.scan_iter(match="lockapi:*", count=1000):
                    total += 1
                    if key.endswith(live_suffixes):
                        live += 1
            finally:
                client.close()
        return {"live": live, "total": total}

    def connections() -> int | None:
        n = 0
        for client in clients():
            try:
                n += len(client.client_list()) - 1
            finally:
                client.close()
        return n

    return count, connections


def hazelcast_footprint(url_members: str, cluster_name: str,
                        prefix: str = "lockapi") -> tuple[Callable[[], Counts], Callable[[], None]]:
    """Map sizes through one lazily created client; returns (count, close)."""
    holder: dict[str, Any] = {}

    def client() -> Any:
        if "c" not in holder:
            import hazelcast

            holder["c"] = hazelcast.HazelcastClient(
                cluster_members=url_members.split(","), cluster_name=cluster_name,
                cluster_connect_timeout=30, invocation_timeout=30, statistics_enabled=False)
        return holder["c"]

    def count() -> Counts:
        c = client()
        sizes = {m: c.get_map(f"{prefix}.{m}").blocking().size() for m in ("locks", "permits", "fences", "done")}
        return {"live": sizes["locks"] + sizes["permits"], "total": sum(sizes.values())}

    def close() -> None:
        if "c" in holder:
            with contextlib.suppress(Exception):
                holder.pop("c").shutdown()

    return count, close


# -- restarting a server in place ---------------------------------------------------------------------
def stop_process(process: ServerProcess, stop_signal: int = signal.SIGTERM) -> None:
    if process.alive():
        process.signal(stop_signal)
        try:
            process.proc.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def start_process(process: ServerProcess, *, user: str | None = None) -> ServerProcess:
    """``process`` started again (same command, log and stop signal)."""
    return ServerProcess(process.argv, log=process.log, user=user, stop_signal=process.stop_signal)


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant (by parent pid in /proc): PostgreSQL's backends call setsid(), so
    signalling the launcher's process group does not reach them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def signal_tree(process: ServerProcess, sig: int) -> None:
    """Send ``sig`` to a server we started and to every process it forked."""
    for pid in process_tree(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _stopped(pid: int) -> bool:
    """True if every thread of ``pid`` is stopped (or gone)."""
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
        if state not in ("T", "t", "Z", "X"):
            return False
    return True


def freeze(process: ServerProcess) -> None:
    """SIGSTOP a server we started (and every process it forked), and return once every thread of them
    has really stopped. ``kill()`` only queues the signal: a busy multi-threaded server (a JVM on a
    loaded machine) keeps running, and answering, for milliseconds after it."""
    signal_tree(process, signal.SIGSTOP)
    pids = process_tree(process.pid)
    wait_until(lambda: all(_stopped(pid) for pid in pids), 30, f"pid {process.pid} to stop", interval=0.001)


def thaw(process: ServerProcess) -> None:
    """SIGCONT what :func:`freeze` stopped."""
    signal_tree(process, signal.SIGCONT)
