"""The replay worker process: ``python -m lockapi_migration.replay.worker FD`` (started by
:class:`~lockapi_migration.replay.process.ProcessReplay`, never by hand).

It reads its settings (JSON) as the first message on the socket ``FD``, opens the shadow backend and
the record store, answers ``ready``, then runs each replay message on its own
:class:`~lockapi_migration.replay.queue.ReplayQueue` (threads of this process) with a
:class:`~lockapi_migration.replay.replayer.Replayer`, recording both sides and the per-minute lag as
the application's node. Requests (``flush``, ``stats``, ``close``) are answered in order with the
replays sent before them. End of file on the socket (the application closed or died) drains and exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from typing import Any

from lockapi import open_backend
from lockapi.spi import Backend, LockError
from lockapi_migration.records.sink import RecordSink
from lockapi_migration.records.store import open_record_store
from lockapi_migration.replay.lag import LagMeter
from lockapi_migration.replay.process import decode
from lockapi_migration.replay.queue import ReplayQueue
from lockapi_migration.replay.replayer import Replayer
from lockapi_migration.strategies.operations import Recorder


class _Primary:
    """The primary backend, opened on first use (only a differing batch decision needs it)."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self._url, self._options = url, options
        self.backend: Backend | None = None
        self._failed = False

    def __call__(self) -> Backend | None:
        if self.backend is None and not self._failed:
            try:
                self.backend = open_backend(self._url, self._options)
            except LockError:
                self._failed = True
        return self.backend


def serve(sock: socket.socket) -> None:
    settings = json.loads(sock.recv(1 << 20))
    if settings.get("nice"):
        with contextlib.suppress(OSError):  # a platform or sandbox that refuses: run at the caller's priority
            os.nice(int(settings["nice"]))
    try:
        shadow = open_backend(settings["shadow_url"], settings["shadow_options"])
        store = open_record_store(settings["record"])
    except LockError as exc:
        sock.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        return
    with contextlib.suppress(LockError):  # connect now: a lazy first connection would be counted as lag
        shadow.ping()
    primary = _Primary(settings["primary_url"], settings["primary_options"])
    sink = RecordSink(store)
    queue = ReplayQueue(workers=settings["workers"], capacity=settings["capacity"])
    lag = LagMeter(settings["node"], settings["max_lag"], sink.put_lag, backlog=queue.backlog)
    sink.ticks.append(lag.tick)
    replayer = Replayer(primary, shadow, settings["primary_label"], settings["shadow_label"],
                        Recorder(sink, settings["node"], settings["phase"]), lag, floor=settings["floor"])
    queue.start(replayer)
    sock.send(json.dumps({"kind": "ready"}).encode())
    try:
        closing = False
        while not closing and (data := sock.recv(1 << 22)):
            for key, method, args, submitted in decode(data):
                if key:
                    if not queue.submit_at(key, getattr(replayer, method), args, submitted):
                        replayer.shed(method, args)
                    continue
                queue.drain(30.0)
                if method != "drain":
                    lag.flush()
                    sink.flush()
                reply = {"kind": method, "seq": args[0], "dropped": queue.dropped, "failed": queue.failed,
                         "records_dropped": sink.dropped, "records_failed": sink.failed,
                         "records_written": sink.written}
                with contextlib.suppress(OSError):
                    sock.send(json.dumps(reply).encode())
                closing = method == "close"
    finally:
        queue.close()
        lag.flush()
        sink.close()
        for closeable in (shadow, primary.backend, store):
            if closeable is not None:
                with contextlib.suppress(LockError):
                    closeable.close()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s[replay]: %(message)s")
    with socket.socket(fileno=int(argv[1])) as sock:
        serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
