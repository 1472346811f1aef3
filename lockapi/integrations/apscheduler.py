"""APScheduler 3 integration: :class:`LockedExecutor` runs every job under a lockapi guard.

The same jobs are added to a scheduler on each of several processes or hosts (each with its own job
store, as APScheduler 3 requires); at each trigger every scheduler fires, and the executor lets one
run it::

    from apscheduler.schedulers.background import BackgroundScheduler
    from lockapi.integrations.apscheduler import LockedExecutor

    scheduler = BackgroundScheduler(executors={"default": LockedExecutor(at_most=1800)})
    scheduler.add_job(send_invoices, "cron", hour=2, id="send-invoices")

The lock of a job is ``"<prefix>:<job id>"`` (give jobs explicit, equal ids on every scheduler). Two
modes:

``once_per_trigger=True`` (default)
    The trigger's scheduled time (UTC, ISO 8601) is the guard's key: the first scheduler to take it runs
    it and marks it done (before releasing), every other skips it, however far their clocks or wake-ups
    drift. Needs triggers that compute the same times everywhere: cron and date triggers do; give an
    interval trigger an explicit ``start_date``.
``once_per_trigger=False``
    One lock per job, no key (ShedLock's model): a scheduler that finds it held skips, and
    ``at_least`` (above the clock skew, below the interval) keeps a late scheduler from running the
    same trigger again.

A skipped trigger produces no APScheduler event (the job did not run here); lockapi emits
``scheduled`` events with outcome False on the manager's listeners. Inside the job,
:func:`lockapi.current_run` gives the run (``token`` to fence with, ``key`` = the scheduled time).
APScheduler 3.x was chosen because it is the stable, widely used line (4.x is still a pre-release
with a different API).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import JobExecutionEvent
from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor

from lockapi.manager import LockManager
from lockapi.scheduling import RunSkipped, ScheduledLock, as_current, scheduled
from lockapi.validation import check_name

log = logging.getLogger(__name__)


def trigger_key(run_time: datetime) -> str:
    """The key of one trigger: its scheduled time in UTC, the same string on every scheduler."""
    return run_time.astimezone(UTC).isoformat()


class LockedExecutor(ThreadPoolExecutor):
    """A thread-pool executor whose jobs run under a :class:`lockapi.ScheduledLock` each.

    ``manager`` (or ``url``; neither: the configuration) is where the locks live; ``at_most``,
    ``at_least``, ``ttl`` and ``remember`` are those of :func:`lockapi.scheduled`, for every job.
    """

    def __init__(
        self,
        manager: LockManager | None = None,
        *,
        url: str | None = None,
        at_most: float = 3600.0,
        at_least: float = 0.0,
        ttl: float | None = None,
        once_per_trigger: bool = True,
        remember: float | None = None,
        prefix: str = "apscheduler",
        max_workers: int = 10,
        pool_kwargs: dict[str, Any] | None = None,
    ) -> None:
        check_name(prefix, "prefix")
        self._manager, self._url = manager, url
        self._settings: dict[str, Any] = {"at_most": at_most, "at_least": at_least, "ttl": ttl,
                                          "remember": remember}
        self._once_per_trigger = bool(once_per_trigger)
        self._prefix = prefix
        self._guards: dict[str, ScheduledLock] = {}
        self._guard_for("<job id>")  # every setting is checked now, before any I/O
        self._guards.clear()
        super().__init__(max_workers, pool_kwargs)

    def _guard_for(self, job_id: str) -> ScheduledLock:
        guard = self._guards.get(job_id)
        if guard is None:
            guard = self._guards[job_id] = scheduled(f"{self._prefix}:{job_id}", manager=self._manager,
                                                     url=self._url, **self._settings)
        return guard

    def _do_submit_job(self, job: Any, run_times: Sequence[datetime]) -> None:
        def callback(future: Any) -> None:
            exc = future.exception()
            if exc is not None:
                self._run_job_error(job.id, exc, getattr(exc, "__traceback__", None))
            else:
                self._run_job_success(job.id, future.result())

        self._guard_for(job.id)  # made here, on the scheduler's thread, so the pool threads only read it
        self._pool.submit(self._run_guarded, job, list(run_times)).add_done_callback(callback)

    def _run_guarded(self, job: Any, run_times: list[datetime]) -> list[JobExecutionEvent]:
        """APScheduler's own ``run_job``, once per run time, each under the job's guard."""
        guard = self._guards[job.id]
        events: list[JobExecutionEvent] = []
        for run_time in run_times:
            key = trigger_key(run_time) if self._once_per_trigger else None
            try:
                run = guard.begin(key)
            except RunSkipped as skipped:
                log.info("lockapi: APScheduler job %r at %s skipped: %s", job.id, run_time, skipped.reason)
                continue
            try:
                with as_current(run):
                    produced = run_job(job, job._jobstore_alias, [run_time], self._logger.name)
            except BaseException as exc:
                guard.end(run, exc)
                raise
            failure = next((e.exception for e in produced if getattr(e, "exception", None) is not None), None)
            guard.end(run, failure)
            events.extend(produced)
        return events
