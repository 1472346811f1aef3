"""One hazelcast-python-client per backend: connected lazily, replaced when it shut itself down, and
every wait on it bounded by ``timeout`` with failures translated (by :mod:`.errors`) to lockapi errors.

The client gives up reconnecting after ``cluster_connect_timeout`` (= ``timeout``) and shuts down for
good; the next call then starts a new client, so a cluster that comes back is used again.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hazelcast.client import HazelcastClient
from hazelcast.future import Future

from lockapi.spi import BackendUnavailable

from . import client_fixes
from .errors import no_answer, translated
from .settings import Settings

__all__ = ["ClientHolder"]

T = TypeVar("T")


class ClientHolder:
    """Owns the client; ``client()`` returns a running one or raises BackendUnavailable in time.

    ``on_new_client`` runs (under the holder's lock) after each new client connected: register
    listeners there, since a replaced client has none.
    """

    def __init__(self, settings: Settings, where: str,
                 on_new_client: Callable[[HazelcastClient], None] | None = None) -> None:
        self.settings = settings
        self.where = where
        self._on_new_client = on_new_client
        self._lock = threading.Lock()
        self._client: HazelcastClient | None = None
        self._closed = False

    def client(self) -> HazelcastClient:
        client = self._client
        if client is not None and client.lifecycle_service.is_running():
            return client
        if not self._lock.acquire(timeout=self.settings.timeout):
            raise no_answer(self.where, "connect (another thread is still connecting)", self.settings.timeout)
        try:
            if self._closed:
                raise BackendUnavailable(f"{self.where}: this backend is closed; connect again")
            client = self._client
            if client is None or not client.lifecycle_service.is_running():
                self._client = None
                client_fixes.apply()
                with self.translate("connect"):
                    client = HazelcastClient(**self.settings.client_kwargs())
                try:
                    if self._on_new_client is not None:
                        with self.translate("set up"):
                            self._on_new_client(client)
                except BaseException:
                    client.shutdown()
                    raise
                self._client = client
            return client
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.shutdown()

    def translate(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Raise the client's errors inside the block as lockapi errors (see :mod:`.errors`)."""
        return translated(self.where, what)

    def wait(self, future: Future[T], deadline: float, what: str) -> T:
        """The future's result, or BackendUnavailable if it has none by ``deadline`` (monotonic)."""
        result: T = self.wait_all([future], deadline, what)[0]
        return result

    def wait_all(self, futures: list[Future[Any]], deadline: float, what: str) -> list[Any]:
        """All results (futures run concurrently: one round trip for all), bounded by ``deadline``."""
        for future in futures:
            done = threading.Event()
            future.add_done_callback(_setter(done))
            if not done.wait(max(0.0, deadline - time.monotonic())):
                raise no_answer(self.where, what, self.settings.timeout)
        with self.translate(what):
            return [future.result() for future in futures]

    def deadline(self) -> float:
        return time.monotonic() + self.settings.timeout


def _setter(event: threading.Event) -> Callable[[Future[Any]], None]:
    def set_event(_future: Future[Any]) -> None:
        event.set()

    return set_event
