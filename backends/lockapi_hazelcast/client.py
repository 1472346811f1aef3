"""The blocking runner: one hazelcast-python-client per backend, connected lazily, replaced when it shut
itself down, and the plans of :mod:`.protocol` run on it with every wait bounded by ``timeout`` and
failures translated (by :mod:`.errors`) to lockapi errors.

The client gives up reconnecting after ``cluster_connect_timeout`` (= ``timeout``) and shuts down for
good; the next call then starts a new client, so a cluster that comes back is used again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hazelcast.client import HazelcastClient
from hazelcast.future import Future
from hazelcast.proxy.map import Map

from lockapi.spi import BackendUnavailable, drive

from . import client_fixes
from .errors import no_answer, translated
from .protocol import Call, Plan, Step
from .settings import Settings

__all__ = ["ClientHolder", "Session"]

log = logging.getLogger("lockapi.hazelcast.client")

T = TypeVar("T")


@dataclass(eq=False)
class Session:
    """One connected client, its IMap proxies by role, and the roles whose wake-up listener it has."""

    client: HazelcastClient
    maps: dict[str, Map[str, str]]
    listening: set[str] = field(default_factory=set)


class ClientHolder:
    """Owns the client; ``session()`` returns a running one or raises BackendUnavailable in time;
    ``run(plan)`` runs a plan on it.

    ``roles``: the IMaps (``<prefix>.<role>``) to open on each new client. ``on_new_client(session,
    previous)`` runs (under the holder's lock) after each new client connected: register listeners
    there, since a replaced client has none.
    """

    def __init__(self, settings: Settings, where: str, roles: tuple[str, ...],
                 on_new_client: Callable[[Session, Session | None], None] | None = None) -> None:
        self.settings = settings
        self.where = where
        self._roles = roles
        self._on_new_client = on_new_client
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._closed = False

    def session(self) -> Session:
        session = self._session
        if session is not None and session.client.lifecycle_service.is_running():
            return session
        if not self._lock.acquire(timeout=self.settings.timeout):
            raise no_answer(self.where, "connect (another thread is still connecting)", self.settings.timeout)
        try:
            if self._closed:
                raise BackendUnavailable(f"{self.where}: this backend is closed; connect again")
            previous = self._session
            if previous is None or not previous.client.lifecycle_service.is_running():
                self._session = None
                client_fixes.apply()
                with self.translate("connect"):
                    client = HazelcastClient(**self.settings.client_kwargs())
                try:
                    with self.translate("set up"):
                        prefix = self.settings.prefix
                        session = Session(client, {role: client.get_map(f"{prefix}.{role}") for role in self._roles})
                        if self._on_new_client is not None:
                            self._on_new_client(session, previous)
                except BaseException:
                    client.shutdown()
                    raise
                self._session = session
            assert self._session is not None
            return self._session
        finally:
            self._lock.release()

    def client(self) -> HazelcastClient:
        return self.session().client

    def close(self) -> None:
        with self._lock:
            self._closed = True
            session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.client.shutdown()

    # -- running plans -------------------------------------------------------------------------------
    def run(self, plan: Plan[T], deadline: float | None = None) -> T:
        """Run ``plan`` on the current client; every step must answer by ``deadline`` (monotonic;
        default: ``timeout`` from now)."""
        return self.run_on(self.session(), plan, self.deadline() if deadline is None else deadline)

    def run_on(self, session: Session, plan: Plan[T], deadline: float) -> T:
        return drive(plan, lambda step: self._step(session, step, deadline))

    def _step(self, session: Session, step: Step, deadline: float) -> Any:
        if isinstance(step, Call):
            if not step.needs_answer:
                _send_without_waiting(session, step)
                return None
            return self.wait(self._send(session, step), deadline, step.what)
        return self.wait_all([self._send(session, call) for call in step.calls], deadline, step.what)

    def _send(self, session: Session, call: Call) -> Future[Any]:
        with self.translate(call.what):  # a client that shut down meanwhile refuses at once
            future: Future[Any] = getattr(session.maps[call.map], call.method)(*call.args, **(call.kwargs or {}))
            return future

    # -- waiting on the client's futures ---------------------------------------------------------------
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


def _send_without_waiting(session: Session, call: Call) -> None:
    try:
        future = getattr(session.maps[call.map], call.method)(*call.args, **(call.kwargs or {}))
    except Exception as exc:  # the client shut down meanwhile: its key locks die with its connection
        log.debug("lockapi: hazelcast %s was not sent: %s", call.what, exc)
        return
    future.add_done_callback(lambda f: _log_failure(call.what, f))


def _log_failure(what: str, future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        log.debug("lockapi: hazelcast %s failed (its answer was not needed): %s", what, exc)


def _setter(event: threading.Event) -> Callable[[Future[Any]], None]:
    def set_event(_future: Future[Any]) -> None:
        event.set()

    return set_event
