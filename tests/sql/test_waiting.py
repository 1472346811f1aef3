"""PostgreSQL LISTEN/NOTIFY wake-ups across processes, one shared listener, and the polling fallback
(MariaDB's server-side wait: tests/sql/test_waitloop.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from lockapi_sql import SQLBackend
from lockapi_sql.listener import Listener

from lockapi.spi import Capability
from tests.servers.common import wait_until
from tests.sql.conftest import Factory

ROOT = Path(__file__).resolve().parents[2]


def release_in_child(url: str, *leases: tuple[str, str, int]) -> None:
    """Release ``leases`` (name, holder, token), in order, from another process; each must succeed."""
    args = [str(part) for lease in leases for part in lease]
    done = subprocess.run([sys.executable, "-m", "tests.sql.workers", "release", url, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def listener_backends(backend: SQLBackend) -> list[int]:
    """pids of the server backends LISTENing on this backend's channel."""
    with backend.engine.connect() as conn:
        return list(conn.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE query = :q"),
            {"q": f'LISTEN "{backend.tables.notify_channel}"'},
        ).scalars())


def test_push_capability_on_postgresql_and_mariadb(sql_url: str, make_backend: Factory) -> None:
    backend = make_backend(sql_url)
    assert (Capability.PUSH_WAKEUP in backend.capabilities) == sql_url.startswith(("postgresql", "mariadb"))
    assert (Capability.MULTI_HOST in backend.capabilities) == (not sql_url.startswith("sqlite"))
    if sql_url.startswith("postgresql"):
        assert Capability.PUSH_WAKEUP not in make_backend(sql_url, listen="false").capabilities


def test_release_in_another_process_wakes_only_its_watchers(pg_url: str, make_backend: Factory,
                                                            name: str) -> None:
    backend = make_backend(pg_url)
    names = {k: f"{name}:{k}" for k in "abc"}
    tokens = {k: backend.try_acquire(n, f"h{k}", 60).token for k, n in names.items()}
    woken = {k: threading.Event() for k in "ac"}
    with backend.watch(names["a"], woken["a"].set), backend.watch(names["c"], woken["c"].set):
        listener = backend._listener
        assert listener is not None
        wait_until(lambda: listener.listening, 30, "LISTEN to be in effect")
        for event in woken.values():
            event.clear()
        # b first, then a: notifications arrive in commit order, so when a's wake has come,
        # b's notification has been handled, and c (never released) must not have been woken.
        release_in_child(pg_url, (names["b"], "hb", tokens["b"]), (names["a"], "ha", tokens["a"]))
        assert woken["a"].wait(30), "no wake-up for a release in another process"
        assert not woken["c"].is_set()
    assert backend.inspect(names["a"]) is None


def test_one_listener_connection_shared_by_all_watches(pg_url: str, make_backend: Factory, prefix: str,
                                                       name: str) -> None:
    backend = make_backend(pg_url, table_prefix=prefix)
    backend.ensure_schema()
    with backend.watch(name, lambda: None), backend.watch(name + "2", lambda: None), \
            backend.watch(name, lambda: None, semaphore=True):
        wait_until(lambda: len(listener_backends(backend)) == 1, 30, "one LISTEN connection")
        assert len(listener_backends(backend)) == 1


def test_watch_falls_back_to_polling_and_reconnects(pg_url: str, make_backend: Factory, prefix: str,
                                                    name: str) -> None:
    backend = make_backend(pg_url, table_prefix=prefix)
    token = backend.try_acquire(name, "h", 60).token
    assert token is not None
    woken = threading.Event()
    with backend.watch(name, woken.set):
        listener = backend._listener
        assert listener is not None
        wait_until(lambda: listener.listening, 30, "LISTEN to be in effect")
        [pid] = listener_backends(backend)
        woken.clear()
        with backend.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.pg_terminate_backend(pid))).scalar_one() is True
        # The listener notices, wakes its watchers (nothing is missed while it is down) and reconnects.
        assert woken.wait(30), "watchers were not woken when the listener connection died"
        wait_until(lambda: listener.listening and len(listener_backends(backend)) == 1, 30,
                   "the listener to reconnect")
        woken.clear()
        release_in_child(f"{pg_url}?table_prefix={prefix}", (name, "h", token))
        assert woken.wait(30), "no push wake-up after the listener reconnected"


@pytest.mark.parametrize("semaphore", [False, True])
def test_releases_notify_locks_and_semaphores_separately(pg_url: str, make_backend: Factory, name: str,
                                                         semaphore: bool) -> None:
    backend, other = make_backend(pg_url), make_backend(pg_url)
    lock_token = backend.try_acquire(name, "hl", 60).token
    permit_token = backend.try_acquire_permit(name, 1, "hs", 60).token
    assert lock_token is not None and permit_token is not None
    woken = threading.Event()
    with other.watch(name, woken.set, semaphore=semaphore):
        woken.clear()
        if semaphore:
            assert backend.release(name, "hl", lock_token)
            assert backend.release_permit(name, "hs", permit_token)
        else:
            assert backend.release_permit(name, "hs", permit_token)
            assert backend.release(name, "hl", lock_token)
        assert woken.wait(30)


def test_a_fair_release_wakes_only_the_next_live_waiter(pg_url: str, make_backend: Factory, name: str) -> None:
    backend = make_backend(pg_url)
    token = backend.try_acquire(name, "holder", 60).token
    assert token is not None
    assert backend.try_acquire(name, "gone", 60, queue_ttl=1e-6).token is None  # expired at once
    for w in ("w1", "w2"):
        assert backend.try_acquire(name, w, 60, queue_ttl=60).token is None
    woken = {w: threading.Event() for w in ("gone", "w1", "w2", "plain", "control")}
    control = name + ":control"

    def settle() -> None:
        """Notifications arrive in commit order: once a control release's has come, everything
        committed before it has been delivered (including the listener's wake-everyone on connect)."""
        woken["control"].clear()
        control_token = backend.try_acquire(control, "c", 60).token
        assert control_token is not None and backend.release(control, "c", control_token)
        assert woken["control"].wait(30)

    with backend.watch(control, woken["control"].set):
        settle()
        with backend.watch(name, woken["gone"].set, holder="gone"), \
                backend.watch(name, woken["w1"].set, holder="w1"), \
                backend.watch(name, woken["w2"].set, holder="w2"), backend.watch(name, woken["plain"].set):
            assert backend.release(name, "holder", token)
            assert woken["w1"].wait(30), "the next live waiter was not woken"
            settle()
            assert woken["plain"].is_set(), "a watcher without a holder hears every release"
            assert not woken["w2"].is_set() and not woken["gone"].is_set()
    assert backend.try_acquire(name, "w1", 60, queue_ttl=60).token is not None


def test_close_stops_a_listening_thread_at_once(pg_url: str, make_backend: Factory, name: str) -> None:
    """close() does not wait for the thread's next poll (30 s here): it shuts the listening connection's
    socket down under the thread, which then ends and closes it."""
    backend = make_backend(pg_url)
    backend.ensure_schema()
    listener = Listener(backend.dialect.connect_params(10.0), backend.tables.notify_channel, timeout=10.0,
                        poll_interval=30.0)
    with listener.watch(name, lambda: None):
        wait_until(lambda: listener.listening and len(listener_backends(backend)) == 1, 30,
                   "LISTEN to be in effect")
        thread = listener._thread
        assert thread is not None
        started = time.monotonic()
        listener.close()
        elapsed = time.monotonic() - started
        assert not thread.is_alive(), "close() returned while the thread still runs"
        assert elapsed < 5.0, f"close() took {elapsed:.1f} s (the thread waited for its next poll)"
    wait_until(lambda: not listener_backends(backend), 30, "the LISTEN connection to end")
    listener.close()  # idempotent
