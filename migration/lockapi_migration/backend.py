"""``migration://``: the backend lockapi.connect() opens when a migration is configured.

It reads the options lockapi's config resolution passes (``source``, ``source_options``, ``target``,
``phase``, ``record``), joins the fleet registry (refusing a phase that is not equal or adjacent to every
live node's), opens the backends the phase needs and delegates every SPI call to the phase's strategy:

======== ============================ ==========================================
phase    application sees             background / extra
======== ============================ ==========================================
off      H                            nothing (no records)
shadow   H                            every operation mirrored to R and recorded
dual     H and R (both required)      both decisions recorded
cutover  R                            every operation mirrored to H and recorded
done     R                            nothing (no records)
======== ============================ ==========================================

Tuning options (in ``[lockapi.migration]`` or ``open_backend("migration://", {...})``): ``node`` (this
node's label in the registry and the records, default ``host:pid``; the id is the label plus a random
suffix, unique per manager), ``max_lag`` (seconds a replay may run behind before it is stale, 1),
``replay`` (``auto``: a worker process when both backends serve several processes, else threads;
``process``; ``threads``), ``replay_nice`` (the worker process's niceness, 10: it yields the CPU to the
application; 0 keeps the application's priority), ``shadow_workers`` (4), ``shadow_queue`` (10000 tasks),
``heartbeat`` (seconds, 2), ``live_after`` (seconds, 10).

Capabilities are the phase's, not the class's: off/shadow H's; dual those H and R share, without
``fair`` and ``atomic_batch``; cutover R's without ``atomic_batch`` (a batch with ``skip_done`` reads H's
markers too); done R's. ``pause_points``: the strategy's own and those of the backends it calls on the
caller's thread.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from lockapi import open_backend
from lockapi.spi import Attempt, Backend, BackendConfig, Capability, ConfigError, LockError, LockInfo, Wake
from lockapi_migration.fleet import HEARTBEAT, LIVE_AFTER, Registry, new_node_id, refuse_phase
from lockapi_migration.phases import H, Phase, R
from lockapi_migration.records.sink import RecordSink
from lockapi_migration.records.store import RecordStore, open_record_store
from lockapi_migration.replay.lag import MAX_LAG, LagMeter
from lockapi_migration.replay.process import REPLAY_NICE, ProcessReplay, WorkerFailed, worker_settings
from lockapi_migration.replay.queue import SHADOW_TIMEOUT, Replay, ReplayQueue
from lockapi_migration.replay.replayer import Replayer
from lockapi_migration.strategies.dual import DualStrategy
from lockapi_migration.strategies.operations import Recorder
from lockapi_migration.strategies.shadow import ShadowStrategy

log = logging.getLogger("lockapi.migration." + __name__.removeprefix("lockapi_migration."))


class MigrationBackend(Backend):
    """Two backends composed according to the configured migration phase (see the module docstring)."""

    description = "migration between two backends (phases off/shadow/dual/cutover/done)"
    capabilities_vary = ("the phase's: off/shadow the source's, dual both's without fair/atomic_batch, "
                         "cutover the target's without atomic_batch, done the target's")

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        o = config.options
        source = _required_url(o.str("source"), "source (the [lockapi] url in use today)")
        source_options = o.raw("source_options") or {}
        target = _required_url(o.str("target"), "target (the backend to move to)")
        self.phase = Phase.parse(o.raw("phase", Phase.OFF.value))
        record = o.str("record")
        self.node = new_node_id(o.str("node"))
        workers = o.int("shadow_workers", 4, minimum=1)
        capacity = o.int("shadow_queue", 10_000, minimum=1)
        max_lag = o.float("max_lag", MAX_LAG)
        replay = o.str("replay", "auto", choices=("auto", "process", "threads")) or "auto"
        self._nice = o.int("replay_nice", REPLAY_NICE)
        heartbeat = o.float("heartbeat", HEARTBEAT)
        live_after = o.float("live_after", LIVE_AFTER)
        o.finish()
        if not isinstance(source_options, dict):
            raise ConfigError("migration option 'source_options' must be a dict")
        if record is None and self.phase is not Phase.OFF:
            message = (f"migration phase {self.phase.value!r} needs record = \"<SQL or Redis URL>\" in "
                       "[lockapi.migration] (decision records and the fleet registry live there)")
            refuse_phase(self.node, self.phase, "no_record", message)
            raise ConfigError(message)
        self.store: RecordStore | None = open_record_store(record, config.timeout) if record else None
        self.registry = Registry(self.store, self.node, self.phase, heartbeat=heartbeat,
                                 live_after=live_after) if self.store else None
        self.sink: RecordSink | None = None
        self.queue: Replay | None = None
        self.lag: LagMeter | None = None
        self._backends: dict[str, Backend] = {}
        try:
            if self.registry is not None:
                self.registry.join()
            shadow = self.phase.shadow
            self._urls = {H: (source, dict(source_options)), R: (target, {})}
            for label in sorted(self.phase.opens):
                url, options = self._urls[label]
                if "timeout" not in options and "timeout" not in _query(url):
                    # a side on the caller's path answers within the caller's timeout; the shadow side
                    # (replayed in the background) within SHADOW_TIMEOUT
                    options["timeout"] = SHADOW_TIMEOUT if label == shadow else config.timeout
                self._backends[label] = open_backend(url, options)
            self._impl = self._strategy(workers, capacity, max_lag, replay, record)
        except BaseException:
            self.close()
            raise
        self.capabilities = self._impl.capabilities
        self.pause_points = self._impl.pause_points
        self.contended_pause_points = self._impl.contended_pause_points

    def _strategy(self, workers: int, capacity: int, max_lag: float, replay: str, record: str | None) -> Backend:
        phase, backends = self.phase, self._backends
        if phase in (Phase.OFF, Phase.DONE):
            return backends[phase.primary]
        if Capability.ADMIN not in backends[R].capabilities and phase is Phase.DUAL:
            message = (f"the target backend {backends[R].config.redacted_url} cannot move fencing counters "
                       "(no ADMIN capability): tokens would go backwards in dual")
            refuse_phase(self.node, phase, "no_admin", message)
            raise ConfigError(message)
        assert self.store is not None
        self.sink = RecordSink(self.store)
        recorder = Recorder(self.sink, self.node, phase.value)
        if phase is Phase.DUAL:
            return DualStrategy(self.config, backends[H], backends[R], recorder)
        primary, shadow = phase.primary, phase.shadow
        assert shadow is not None and record is not None
        floor = Capability.ADMIN in backends[shadow].capabilities
        queue = self._worker(replay, record, workers, capacity, max_lag, floor)
        threads = ReplayQueue(workers=workers, capacity=capacity) if queue is None else None
        self.queue = queue or threads
        assert self.queue is not None
        self.lag = LagMeter(self.node, max_lag, self.sink.put_lag, backlog=self.queue.backlog)
        self.sink.ticks.append(self.lag.tick)
        replayer = Replayer(lambda: backends[primary], backends[shadow], primary, shadow, recorder, self.lag,
                            floor=floor)
        if threads is not None:
            threads.start(replayer, phase=phase.value, side=shadow)
        if queue is not None:
            queue.on_shed = replayer.shed
        return ShadowStrategy(self.config, backends[primary], backends[shadow], replayer, self.queue,
                              union_done=phase is Phase.CUTOVER)

    def _worker(self, replay: str, record: str, workers: int, capacity: int, max_lag: float,
                floor: bool) -> ProcessReplay | None:
        """The replay worker process for ``replay`` = auto/process, or None to replay on threads."""
        primary, shadow = self.phase.primary, self.phase.shadow
        assert shadow is not None
        shared = all(Capability.MULTI_PROCESS in self._backends[label].capabilities for label in (primary, shadow))
        settings = worker_settings(
            shadow_url=self._urls[shadow][0], shadow_options=self._urls[shadow][1],
            primary_url=self._urls[primary][0], primary_options=self._urls[primary][1], record=record,
            node=self.node, phase=self.phase.value, primary_label=primary, shadow_label=shadow,
            workers=workers, capacity=capacity, max_lag=max_lag, floor=floor, nice=self._nice)
        if replay == "threads" or (replay == "auto" and (not shared or settings is None)):
            return None
        if not shared or settings is None:
            raise ConfigError("replay = \"process\" needs both backends to serve several processes "
                              "(MULTI_PROCESS) and JSON-serialisable options; use replay = \"auto\"")
        try:
            return ProcessReplay(settings, shards=workers, capacity=capacity)
        except WorkerFailed as exc:
            log.warning("lockapi migration: %s; replaying on threads of this process instead", exc)
            return None

    def backend(self, label: str) -> Backend:
        """The H or R backend this node opened (KeyError if the phase does not use it)."""
        return self._backends[label]

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for queued shadow operations and write queued records (tests, shutdown)."""
        if self.queue is not None:
            self.queue.flush(timeout)
        if self.lag is not None:
            self.lag.flush()
        if self.sink is not None:
            self.sink.flush()

    def stats(self) -> dict[str, int]:
        """Counters: replays dropped/failed, records dropped/failed/written (the replay worker's too)."""
        ex, sink = self.queue, self.sink
        worker = ex.stats() if isinstance(ex, ProcessReplay) else {}
        return {
            "shadow_dropped": (ex.dropped if ex else 0) + worker.get("dropped", 0),
            "shadow_failed": (ex.failed if ex else 0) + worker.get("failed", 0),
            "records_dropped": (sink.dropped if sink else 0) + worker.get("records_dropped", 0),
            "records_failed": (sink.failed if sink else 0) + worker.get("records_failed", 0),
            "records_written": (sink.written if sink else 0) + worker.get("records_written", 0),
        }

    # -- delegation --------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        return self._impl.try_acquire(name, holder, ttl, queue_ttl=queue_ttl)

    def release(self, name: str, holder: str, token: int) -> bool:
        return self._impl.release(name, holder, token)

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._impl.extend(name, holder, token, ttl)

    def inspect(self, name: str) -> LockInfo | None:
        return self._impl.inspect(name)

    def holds(self, name: str, holder: str, token: int) -> bool:
        return self._impl.holds(name, holder, token)

    def cancel_wait(self, name: str, holder: str) -> None:
        self._impl.cancel_wait(name, holder)

    def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        return self._impl.try_acquire_many(names, holder, ttl, skip_done=skip_done)

    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        return self._impl.try_acquire_permit(name, permits, holder, ttl)

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        return self._impl.release_permit(name, holder, token)

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._impl.extend_permit(name, holder, token, ttl)

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return self._impl.holds_permit(name, holder, token)

    def mark_done(self, name: str, ttl: float) -> None:
        self._impl.mark_done(name, ttl)

    def done(self, names: Sequence[str]) -> set[str]:
        return self._impl.done(names)

    def iter_done(self) -> Iterator[tuple[str, float]]:
        return self._impl.iter_done()

    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        self._impl.set_fence_floor(name, token, semaphore=semaphore)

    def force_release(self, name: str) -> bool:
        return self._impl.force_release(name)

    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        return self._impl.watch(name, wake, semaphore=semaphore, holder=holder)

    def ping(self) -> None:
        self._impl.ping()

    def close(self) -> None:
        """Drain the shadow queue and records (bounded), leave the registry, close both backends."""
        if self.queue is not None:
            self.queue.close()
            self.queue = None
        if self.lag is not None:
            self.lag.flush()
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        if self.registry is not None:
            self.registry.leave()
        for backend in self._backends.values():
            with contextlib.suppress(LockError):
                backend.close()
        self._backends = {}
        if self.store is not None:
            self.store.close()
            self.store = None


def _required_url(value: str | None, what: str) -> str:
    if not value:
        raise ConfigError(f"migration needs {what}")
    return value


def _query(url: str) -> dict[str, Any]:
    try:
        return dict(parse_qsl(urlsplit(url).query))
    except ValueError:
        return {}
