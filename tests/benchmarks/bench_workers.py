"""Worker processes (multiprocessing, spawn): each builds its own Locker and obeys commands on a pipe.

Commands (tuples): ``("handoff", name, delay)`` acquire, report "held", sleep ``delay``, then release and
send the monotonic_ns time taken just before the release call; ``("contend", names, start_ns, seconds)``
loop acquire+release on ``names`` (random pick) from ``start_ns`` for ``seconds`` and reply
``(grants, errors, first error)``; ``("stop",)``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from tests.benchmarks.bench_subjects import BY_KEY, Env

CONTEND_TIMEOUT = 30.0


def worker_main(key: str, env: Env, conn: Connection) -> None:
    try:
        locker = BY_KEY[key].make(env)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    try:
        _serve(locker, conn)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
    finally:
        with contextlib.suppress(Exception):
            locker.close()
        conn.close()


def _serve(locker: Any, conn: Connection) -> None:
    while True:
        cmd = conn.recv()
        if cmd[0] == "stop":
            return
        if cmd[0] == "handoff":
            _, name, delay = cmd
            handle = locker.acquire(name, CONTEND_TIMEOUT)
            conn.send("held")
            time.sleep(delay)
            t0 = time.monotonic_ns()
            locker.release(handle)
            conn.send(t0)
        elif cmd[0] == "contend":
            _, names, start_ns, seconds = cmd
            conn.send(_contend(locker, names, start_ns, seconds))


def _contend(locker: Any, names: list[str], start_ns: int, seconds: float) -> tuple[int, int, str]:
    pause = (start_ns - time.monotonic_ns()) / 1e9
    if pause > 0:
        time.sleep(pause)
    end = start_ns + int(seconds * 1e9)
    grants = errors = 0
    first = ""
    one = names[0] if len(names) == 1 else None
    while time.monotonic_ns() < end:
        name = one or random.choice(names)
        try:
            handle = locker.acquire(name, CONTEND_TIMEOUT)
        except Exception as exc:
            errors += 1
            first = first or f"{type(exc).__name__}: {exc}"[:300]
            continue
        if time.monotonic_ns() < end:
            grants += 1
        locker.release(handle)
    return grants, errors, first


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, key: str, env: Env) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(key, env, child), daemon=True)
        self.proc.start()
        child.close()

    def ready(self, timeout: float = 60.0) -> None:
        if not self.conn.poll(timeout):
            raise RuntimeError("worker did not start in time")
        status, detail = self.conn.recv()
        if status != "ready":
            raise RuntimeError(f"worker failed to start:\n{detail}")

    def send(self, cmd: tuple[Any, ...]) -> None:
        self.conn.send(cmd)

    def recv(self, timeout: float = 60.0) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError("worker did not answer in time")
        reply = self.conn.recv()
        if isinstance(reply, tuple) and reply and reply[0] == "error":
            raise RuntimeError("worker failed: " + str(reply[1]).strip().splitlines()[-1])
        return reply

    def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(("stop",))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()  # our own child, by its handle
            self.proc.join(5)
        self.conn.close()


@contextlib.contextmanager
def workers(key: str, env: Env, count: int) -> Iterator[list[Worker]]:
    """``count`` ready workers of subject ``key``; stopped at exit."""
    started = [Worker(key, env) for _ in range(count)]
    try:
        for w in started:
            w.ready()
        yield started
    finally:
        for w in started:
            w.stop()
