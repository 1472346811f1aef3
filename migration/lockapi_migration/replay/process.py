"""The replay in a process of its own, so it never competes with the application for the GIL.

A shadow replay costs as much Python work as the operation it replays (a client library call per
shadow operation, a record per decision). Run on threads of the application's process, that work holds
the GIL exactly when the application's own calls come back from the network and want it, which cost a
back-to-back caller 20-50 % in the benchmark. :class:`ProcessReplay` starts ``python -m
lockapi_migration.replay.worker`` (:mod:`.worker`: its own shadow backend, record store, lag meter and
:class:`~lockapi_migration.replay.queue.ReplayQueue`) and hands each replay over as one message on a
Unix ``SOCK_SEQPACKET`` socket pair. The caller only appends a tuple to a bounded in-memory list; a
sender thread wakes at most every :data:`INTERVAL` seconds while there is traffic and sends what has
gathered as ONE message (pickled, delivered whole or not at all), so the worker is woken a few hundred
times a second, not once per operation, and takes no CPU from the application's own calls between. A
full list or socket sheds the replays (counted and recorded as ``dropped``, like a full queue). The
worker ends when the application closes the backend or its process dies (end of file).

Used when both backends serve several processes (``Capability.MULTI_PROCESS``) and their options travel
as JSON; otherwise, or when the worker does not start, the replay runs on threads (a warning says so).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import logging
import pickle
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from lockapi_migration.replay.queue import Replay

log = logging.getLogger("lockapi.migration." + __name__.removeprefix("lockapi_migration."))

START_TIMEOUT = 30.0
"""Seconds the worker may take to import lockapi and open its backends before threads are used instead."""
BUFFER = 4 * 1024 * 1024
"""Socket buffer asked for (the kernel may cap it): how much a slow replay may have in flight."""
INTERVAL = 0.01
"""Seconds the sender gathers replays before it sends them (the lag this adds is at most this)."""
BATCH = 200
"""Replays per message at most (a message must fit the socket buffer)."""
REPLAY_NICE = 10
"""The replay worker's default niceness (option ``replay_nice``): the shadow is background work, so on a
busy machine the application's process gets the CPU first; a replay that falls behind is counted as lag
and marked stale past ``max_lag``, never compared late as if it were current."""


def encode(message: tuple[Any, ...]) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> Any:
    """A message from the other end of our own socket pair (never from the network)."""
    return pickle.loads(data)


class WorkerFailed(Exception):
    """The replay worker did not start or answer in time (the caller falls back to threads)."""


class ProcessReplay(Replay):
    """The parent side of the replay worker process (see the module docstring)."""

    def __init__(self, settings: dict[str, Any], *, shards: int, capacity: int = 10_000) -> None:
        self.shards = shards
        self.dropped = 0
        self.failed = 0
        self.on_shed: Callable[[str, tuple[Any, ...]], None] = lambda method, args: None
        """Called for every replay shed after ``submit`` accepted it (the socket was full)."""
        self._capacity = capacity
        self._pending: collections.deque[tuple[str, str, tuple[Any, ...], float]] = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        """Held while sending (the sender thread and requests share the socket)."""
        self._requests = 0
        self._dead = False
        self._sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (self._sock, child):
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "lockapi_migration.replay.worker", str(child.fileno())],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            self._sock.close()
            raise WorkerFailed(f"cannot start the replay worker: {exc}") from None
        finally:
            child.close()
        try:
            self._sock.sendall(json.dumps(settings).encode())  # the settings hold URLs: never on a command line
            self._answer("ready", START_TIMEOUT)
        except (OSError, WorkerFailed) as exc:
            self._stop(kill=True)
            raise WorkerFailed(str(exc)) from None
        self._sock.setblocking(False)
        self._sender = threading.Thread(target=self._send_loop, name="lockapi-replay-sender", daemon=True)
        self._sender.start()

    def submit(self, key: str, method: str, *args: Any) -> bool:
        if self._dead or len(self._pending) >= self._capacity:
            self.dropped += 1
            return False
        self._pending.append((key, method, args, time.monotonic()))  # deque.append: atomic, no lock
        if not self._wake.is_set():
            self._wake.set()
        return True

    def _send_loop(self) -> None:
        while not self._dead:
            self._wake.wait()
            time.sleep(INTERVAL)  # gather: one message for everything that arrives meanwhile
            self._wake.clear()
            with self._lock:
                self._send_pending()

    def _send_pending(self) -> None:
        """Send what is pending (caller holds ``_lock``); shed what the socket cannot take."""
        while self._pending and not self._dead:
            batch: list[tuple[str, str, tuple[Any, ...], float]] = []
            with contextlib.suppress(IndexError):
                while len(batch) < BATCH:
                    batch.append(self._pending.popleft())
            try:
                self._sock.send(encode(tuple(batch)))
                continue
            except BlockingIOError:
                pass  # the worker is this far behind: shed (counted, recorded)
            except OSError as exc:  # the worker died, or a batch too large for the socket
                if exc.errno != errno.EMSGSIZE:
                    self._dead = True
                    log.warning("lockapi migration: the replay worker is gone (%s): replays are dropped", exc,
                                extra={"lockapi_event": "migration_worker_gone", "lockapi_error": str(exc)})
            self.dropped += len(batch)
            for _, method, args, _ in batch:
                self.on_shed(method, args)

    def _request(self, kind: str, timeout: float) -> dict[str, Any]:
        with self._lock:
            self._send_pending()
            self._requests += 1
            seq = self._requests
            deadline = time.monotonic() + timeout
            while True:
                try:
                    self._sock.send(encode((("", kind, (seq,), time.monotonic()),)))
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise WorkerFailed(f"the replay worker took no {kind} request within {timeout:g} s") from None
                    select.select([], [self._sock], [], max(0.0, deadline - time.monotonic()))
            while True:
                reply = self._answer(kind, max(0.0, deadline - time.monotonic()))
                if reply.get("seq") == seq:
                    return reply

    def _answer(self, kind: str, timeout: float) -> dict[str, Any]:
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            raise WorkerFailed(f"the replay worker sent no {kind} answer within {timeout:g} s")
        data = self._sock.recv(1 << 20)
        if not data:
            raise WorkerFailed("the replay worker exited")
        reply: dict[str, Any] = json.loads(data)
        if "error" in reply:
            raise WorkerFailed(f"the replay worker failed: {reply['error']}")
        return reply

    def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """The worker's counters (``dropped``, ``failed``, ``records_*``)."""
        if self._dead:
            return {}
        try:
            return self._request("stats", timeout)
        except (OSError, WorkerFailed) as exc:
            log.warning("lockapi migration: %s", exc)
            return {}

    def backlog(self) -> float:
        return 0.0  # the worker measures its own and reports it in its lag samples

    def drain(self, timeout: float) -> bool:
        return self._ask("drain", timeout)

    def flush(self, timeout: float) -> bool:
        return self._ask("flush", timeout)

    def _ask(self, kind: str, timeout: float) -> bool:
        if self._dead:
            return False
        try:
            self._request(kind, timeout)
        except (OSError, WorkerFailed) as exc:
            log.warning("lockapi migration: %s", exc)
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        if not self._dead:
            with contextlib.suppress(OSError, WorkerFailed):
                self._request("close", timeout)
        self._stop(kill=False, timeout=timeout)

    def _stop(self, *, kill: bool, timeout: float = 5.0) -> None:
        self._dead = True
        self._wake.set()
        with contextlib.suppress(OSError):
            self._sock.close()  # end of file: the worker drains and exits
        if kill:
            self._proc.kill()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)


def worker_settings(**settings: Any) -> dict[str, Any] | None:
    """``settings`` if they travel as JSON (the worker opens its backends from them), else None."""
    try:
        json.dumps(settings)
    except (TypeError, ValueError):
        return None
    return settings

