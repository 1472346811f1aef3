"""Celery integration: :class:`LockedTask`, a task base class that runs each key once at a time across
workers and, with ``lock_once``, refuses to even enqueue a duplicate (celery-once's model).

Options are task attributes, so they can be given to ``@app.task``::

    from lockapi.integrations.celery import LockedTask

    @app.task(base=LockedTask, lock_at_most=600, lock_at_least=60)
    def refresh_account(account_id: int) -> None: ...

    @app.task(base=LockedTask, lock_once=True, lock_key=lambda invoice_id: str(invoice_id))
    def send_invoice(invoice_id: int) -> None: ...      # send_invoice.delay(42) twice: AlreadyQueued

Execution guard (every LockedTask)
    A worker runs the task under :func:`lockapi.scheduled` on the lock ``"celery:<task>:<key>"``
    (``lock_key(*args, **kwargs)``; default: a digest of the arguments; ``lock_key=None``: one lock
    for the task). A worker that finds it held skips the message: the task succeeds with
    :meth:`LockedTask.on_lock_skipped`'s value (default ``{"lockapi": "skipped", ...}``, so callers can
    see the decision in the result). ``lock_at_most`` / ``lock_at_least`` / ``lock_wait`` /
    ``lock_ttl`` are those of :func:`lockapi.scheduled`; ``lock_remember`` (seconds) makes it once per
    key: a key that ran successfully is skipped for that long (done markers, the job API's order).
``lock_once=True``
    ``apply_async`` / ``delay`` first takes ``"celery-once:<task>:<key>"`` for ``lock_at_most``
    seconds (not renewed: a lost worker blocks it at most that long); if it is held, a duplicate of a
    queued or running task, they raise :class:`AlreadyQueued` (a :class:`lockapi.LockError`; with
    ``lock_once_graceful=True`` they return None instead, and log it). Never silent: celery-once's
    users lost tasks that were quietly not sent. The worker releases that lease by its identity when
    the task ends, whatever its outcome, so the next one may be queued.

Workers and producers find the locks through ``lock_url`` (None: ``$LOCKAPI_URL``, ``lockapi.toml``,
the embedded SQLite file); each process, including each prefork child, opens its own connection.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from celery import Task

from lockapi.errors import LockError
from lockapi.manager import LockManager
from lockapi.scheduling import RunSkipped, as_current, scheduled, shared_manager

log = logging.getLogger(__name__)

ONCE_HEADER = "lockapi_once"
"""The message header that carries the enqueue lease (name, holder id, token) to the worker."""


class AlreadyQueued(LockError):
    """``lock_once``: the same task with the same key is already queued or running."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"{name!r} is already queued or running (lock_once): not sent again; it can be "
                         "sent once that one ends, or after lock_at_most")


def argument_digest(*args: Any, **kwargs: Any) -> str:
    """The default key: a digest of the task's arguments as JSON (keys sorted), so equal calls share it."""
    text = json.dumps([args, kwargs], sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class LockedTask(Task):
    """A Celery task whose executions are guarded by lockapi; see the module docs for the options."""

    lock_at_most: ClassVar[float] = 3600.0
    lock_at_least: ClassVar[float] = 0.0
    lock_wait: ClassVar[float | None] = 0.0
    lock_ttl: ClassVar[float | None] = None
    lock_remember: ClassVar[float | None] = None
    lock_key: ClassVar[Callable[..., str] | None] = staticmethod(argument_digest)
    lock_once: ClassVar[bool] = False
    lock_once_graceful: ClassVar[bool] = False
    lock_url: ClassVar[str | None] = None

    # -- names ---------------------------------------------------------------------------------------
    def lock_manager(self) -> LockManager:
        """The manager the locks live in (one per process and URL)."""
        return shared_manager(self.lock_url)

    def lock_key_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        key_of = type(self).lock_key  # read from the class: a plain function given to @app.task stays unbound
        if key_of is None:
            return None
        key = key_of(*args, **kwargs)
        if not isinstance(key, str):
            raise TypeError(f"{self.name}.lock_key must return a str, got {type(key).__name__}")
        return key

    def _lock_name(self, prefix: str, key: str | None) -> str:
        return f"{prefix}:{self.name}" if key is None else f"{prefix}:{self.name}:{key}"

    # -- worker side ---------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._run_guarded(args, kwargs)
        finally:
            self._release_once_lease()

    def _run_guarded(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self.lock_key_of(args, kwargs)
        once_per_key = self.lock_remember is not None and key is not None
        guard = scheduled(
            self._lock_name("celery", None if once_per_key else key), manager=self.lock_manager(),
            at_most=self.lock_at_most, at_least=self.lock_at_least, wait=self.lock_wait, ttl=self.lock_ttl,
            key=key if once_per_key else None, remember=self.lock_remember)
        try:
            run = guard.begin()
        except RunSkipped as skipped:
            log.info("lockapi: task %s[%s] skipped: %s", self.name, self.request.id, skipped)
            return self.on_lock_skipped(skipped)
        try:
            with as_current(run):
                result = super().__call__(*args, **kwargs)
        except BaseException as exc:
            guard.end(run, exc)
            raise
        guard.end(run, None)
        return result

    def on_lock_skipped(self, skipped: RunSkipped) -> Any:
        """The task's result when another worker holds its lock (or, with ``lock_remember``, the key
        already ran). Override to return something else, or raise (e.g. ``celery.exceptions.Ignore``)."""
        return {"lockapi": "skipped", "lock": skipped.name, "key": skipped.key, "reason": skipped.reason}

    def _release_once_lease(self) -> None:
        carried = getattr(self.request, ONCE_HEADER, None) or (self.request.headers or {}).get(ONCE_HEADER)
        if not carried:
            return
        name, holder, token = carried
        try:  # by identity: a successor's lease (after this one expired) is never released
            self.lock_manager().backend.release(str(name), str(holder), int(token))
        except LockError as exc:
            log.warning("lockapi: could not release %r after task %s (it expires after lock_at_most): %s",
                        name, self.request.id, exc)

    # -- producer side -------------------------------------------------------------------------------
    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        if not self.lock_once:
            return super().apply_async(args, kwargs, **options)
        name = self._lock_name("celery-once", self.lock_key_of(tuple(args or ()), dict(kwargs or {})))
        lease = self.lock_manager().try_acquire(name, ttl=self.lock_at_most)
        if lease is None:
            if self.lock_once_graceful:
                log.info("lockapi: %s not sent: %r is already queued or running", self.name, name)
                return None
            raise AlreadyQueued(name)
        headers = {**(options.pop("headers", None) or {}), ONCE_HEADER: [name, lease.holder, lease.token]}
        try:
            return super().apply_async(args, kwargs, headers=headers, **options)
        except BaseException:
            lease.release()
            raise
