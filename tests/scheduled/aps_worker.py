"""One APScheduler 3 scheduler process for the integration tests.

``python -m tests.scheduled.aps_worker URL LOG PREFIX COUNT INTERVAL MODE``: prints "ready" once its
scheduler runs and the backend's modules are loaded and connected (a lock round trip), so that nothing slow
is left between START and the first trigger; then reads the epoch time START from stdin; a
BackgroundScheduler whose default executor is lockapi's LockedExecutor fires the job "tick" COUNT times,
every INTERVAL seconds from START; each execution appends "<pid> <key or -> <wall time>" to LOG. MODE is
"trigger" (once per trigger) or "window" (one lock per job, at_least INTERVAL/2).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_REMOVED
from apscheduler.schedulers.background import BackgroundScheduler

import lockapi
from lockapi.integrations.apscheduler import LockedExecutor


def main() -> int:
    url, log, prefix, count, interval, mode = sys.argv[1:7]
    every = float(interval)
    executor = LockedExecutor(url=url, prefix=prefix, at_most=30, once_per_trigger=mode == "trigger",
                              at_least=every / 2 if mode == "window" else 0.0)
    scheduler = BackgroundScheduler(executors={"default": executor}, timezone=UTC)
    removed = threading.Event()
    scheduler.add_listener(lambda event: removed.set(), EVENT_JOB_REMOVED)
    scheduler.start()
    # Load and connect the backend now: a first run made late by imports under load holds the "window"
    # lock past the next trigger, which then runs nowhere.
    with lockapi.connect(url) as warm:
        lease = warm.try_acquire(f"{prefix}-warm-up-{os.getpid()}", ttl=5)
        assert lease is not None and lease.release()
    print("ready", flush=True)
    start = sys.stdin.readline()  # the test sends it once every scheduler process is ready
    first = datetime.fromtimestamp(float(start), UTC)

    def tick() -> None:
        run = lockapi.current_run()
        key = run.key if run is not None and run.key else "-"
        time.sleep(0.05)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {key} {time.time():.3f}\n")

    scheduler.add_job(tick, "interval", seconds=every, start_date=first, id="tick", misfire_grace_time=30,
                      end_date=first + timedelta(seconds=every * (int(count) - 1) + every / 2))
    if not removed.wait(every * int(count) + 120):
        return 1
    scheduler.shutdown(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
