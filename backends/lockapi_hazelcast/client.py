"""One hazelcast-python-client per backend: connected lazily, replaced when it shut itself down, and
every wait on it bounded by ``timeout`` with failures translated to :class:`BackendUnavailable`.

The client gives up reconnecting after ``cluster_connect_timeout`` (= ``timeout``) and shuts down for
good; the next call then starts a new client, so a cluster that comes back is used again.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from hazelcast.client import HazelcastClient
from hazelcast.errors import HazelcastError
from hazelcast.future import Future

from lockapi.spi import BackendUnavailable, LockError, UnsupportedFeature

from .settings import Settings

T = TypeVar("T")

_NO_CP = ("licensed feature", "Enterprise feature", "CP Subsystem is not enabled")
"""How members without a usable CP subsystem word their refusal (5.5+ community, CP off)."""


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
            raise BackendUnavailable(f"{self.where}: still connecting after {self.settings.timeout:g}s")
        try:
            if self._closed:
                raise BackendUnavailable(f"{self.where}: backend is closed")
            client = self._client
            if client is None or not client.lifecycle_service.is_running():
                self._client = None
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

    @contextlib.contextmanager
    def translate(self, what: str) -> Iterator[None]:
        """Turn the client's errors into lockapi's (never leaking a password: messages name members)."""
        try:
            yield
        except LockError:
            raise
        except HazelcastError as exc:
            if any(sign in str(exc) for sign in _NO_CP):
                raise UnsupportedFeature(
                    f"{self.where}: the cluster has no CP subsystem (community 5.5+ removed it); "
                    "use mode=map"
                ) from None
            raise BackendUnavailable(f"{self.where}: {what} failed: {type(exc).__name__}: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise BackendUnavailable(f"{self.where}: {what} failed: {type(exc).__name__}: {exc}") from None

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
                raise BackendUnavailable(
                    f"{self.where}: {what}: no answer within {self.settings.timeout:g}s")
        with self.translate(what):
            return [future.result() for future in futures]

    def deadline(self) -> float:
        return time.monotonic() + self.settings.timeout


def _setter(event: threading.Event) -> Callable[[Future[Any]], None]:
    def set_event(_future: Future[Any]) -> None:
        event.set()

    return set_event
