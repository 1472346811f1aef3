"""The fleet registry: each migrating node publishes its phase and a heartbeat to the record store.

A node joins by publishing its entry FIRST and then reading everyone else's (so two nodes starting at
once in incompatible phases both see each other and both refuse), and refuses to start when a live node
is in a phase that is neither equal nor adjacent to its own. A node is live while its last heartbeat is
younger than ``live_after`` seconds; a clean shutdown removes its entry at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time

from lockapi.spi import ConfigError, LockError
from lockapi_migration.phases import Phase, blockers
from lockapi_migration.records.store import SHADOW_STARTED, NodeInfo, RecordStore

log = logging.getLogger("lockapi.migration." + __name__.removeprefix("lockapi_migration."))

HEARTBEAT = 2.0
"""Seconds between heartbeats."""
LIVE_AFTER = 10.0
"""A node whose last heartbeat is older than this many seconds is considered gone."""


def default_label() -> str:
    """The human part of a node id: ``host:pid`` (not unique: two managers in one process, or two
    containers with one hostname whose application is PID 1, share it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def new_node_id(label: str | None = None) -> str:
    """A registry id unique to one migration manager: ``<label>/<8 random hex digits>``."""
    return f"{label or default_label()}/{secrets.token_hex(4)}"


def live_nodes(store: RecordStore, *, live_after: float = LIVE_AFTER, now: float | None = None) -> list[NodeInfo]:
    """The registry entries with a heartbeat younger than ``live_after`` seconds."""
    now = time.time() if now is None else now
    return [n for n in store.nodes() if now - n.heartbeat < live_after]


class PhaseConflict(ConfigError):
    """This node's phase is not equal or adjacent to a live node's phase."""


def refuse_phase(node: str, phase: Phase, reason: str, message: str, *, blockers: str = "") -> None:
    """Log the one ``phase_refused`` line (ERROR, structured fields, no URL with a password: callers pass
    redacted text) for a node that will not start in ``phase``; the caller then raises its ConfigError.

    ``reason``: ``fleet`` (a live node's phase is not equal or adjacent), ``no_record`` (no record store
    configured), ``no_admin`` (dual, and the target cannot move fencing counters)."""
    log.error("lockapi migration: node %s refused phase %r: %s", node, phase.value, message,
              extra={"lockapi_event": "phase_refused", "lockapi_node": node, "lockapi_phase": phase.value,
                     "lockapi_reason": reason, "lockapi_blockers": blockers})


class Registry:
    """This node's registry entry, kept fresh by a heartbeat thread until :meth:`leave`."""

    def __init__(self, store: RecordStore, node: str, phase: Phase, *, heartbeat: float = HEARTBEAT,
                 live_after: float = LIVE_AFTER) -> None:
        self.store = store
        self.node = node
        self.phase = phase
        self._heartbeat = heartbeat
        self._live_after = live_after
        self._started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def join(self) -> None:
        """Publish this node, then refuse (:class:`PhaseConflict`, entry removed) if a live node blocks it."""
        self._beat()
        others = {n.node: Phase.parse(n.phase)
                  for n in live_nodes(self.store, live_after=self._live_after) if n.node != self.node}
        blocking = blockers(self.phase, others)
        if blocking:
            self.store.leave(self.node)
            listed = ", ".join(f"{node} ({phase.value})" for node, phase in sorted(blocking.items()))
            message = (f"refusing to start in migration phase {self.phase.value!r}: live nodes in phases that are "
                       f"not equal or adjacent to it: {listed}. Move the fleet one phase at a time "
                       "(off -> shadow -> dual -> cutover -> done); see `lockapi migrate status`")
            refuse_phase(self.node, self.phase, "fleet", message, blockers=listed)
            raise PhaseConflict(message)
        if self.phase.index >= Phase.SHADOW.index:
            self.store.set_milestone(SHADOW_STARTED, self._started, only_if_absent=True)
        self._thread = threading.Thread(target=self._run, name="lockapi-migration-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        self.store.beat(NodeInfo(self.node, self.phase.value, self._started, time.time()))

    def _run(self) -> None:
        while not self._stop.wait(self._heartbeat):
            try:
                self._beat()
            except LockError as exc:
                log.warning("lockapi migration: heartbeat of %s failed: %s", self.node, exc)

    def leave(self) -> None:
        """Stop the heartbeat and remove this node's entry. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._heartbeat + 1)
        try:
            self.store.leave(self.node)
        except LockError as exc:
            log.warning("lockapi migration: could not remove %s from the registry: %s", self.node, exc)
