"""The Celery app the integration tests run in real workers (``celery -A tests.scheduled.celery_app``).

Configured from the environment: CELERY_BROKER and CELERY_RESULTS (the session Redis server),
LOCKAPI_URL (the lock store under test), TASK_LOG (every execution appends "<task> <key> <pid>") and
READY_DIR (each worker touches a file there once it consumes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from lockapi.integrations.celery import LockedTask

app = Celery("lockapi_tests", broker=os.environ.get("CELERY_BROKER", "memory://"),
             backend=os.environ.get("CELERY_RESULTS", "cache+memory://"))
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)


def _log(task: str, key: str) -> None:
    with open(os.environ["TASK_LOG"], "a") as f:
        f.write(f"{task} {key} {os.getpid()}\n")


@app.task(base=LockedTask, lock_at_most=60, lock_at_least=30)
def once_per_key(key: str) -> int:
    """Runs at most once per key while the test lasts (at_least 30 s)."""
    _log("once_per_key", key)
    time.sleep(0.2)
    return os.getpid()


@app.task(base=LockedTask, lock_at_most=60, lock_remember=3600, lock_key=lambda key, go=None: key)
def remembered(key: str, go: str | None = None) -> int:
    """Once per key for an hour (done markers), whatever the timing."""
    _log("remembered", key)
    return os.getpid()


@app.task(base=LockedTask, lock_at_most=60, lock_once=True, lock_key=lambda key, go: key)
def enqueue_once(key: str, go: str) -> int:
    """Not even enqueued twice; waits for the file ``go`` so the test controls when it ends."""
    _log("enqueue_once", key)
    while not Path(go).exists():
        time.sleep(0.01)
    return os.getpid()


@app.task(base=LockedTask, lock_at_most=2, lock_once=True, lock_key=lambda key: key)
def short_once(key: str) -> None:
    """lock_once with a 2 s bound (the test never runs a worker on its queue)."""


@app.task(base=LockedTask, lock_at_most=60, lock_once=True, lock_once_graceful=True, lock_key=lambda key: key)
def graceful_once(key: str) -> None:
    """lock_once that returns None for a duplicate instead of raising."""


@worker_ready.connect
def _ready(sender: Any = None, **_: Any) -> None:
    folder = os.environ.get("READY_DIR")
    if folder:
        Path(folder, f"{os.getpid()}").touch()
