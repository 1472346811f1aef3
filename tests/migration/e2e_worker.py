"""One worker of the end-to-end migration fleet (run as ``python -m tests.migration.e2e_worker``, or in a
test's child process through :func:`run_in_child`).

Configured only through the environment, like an application: ``LOCKAPI_URL`` (H) and
``LOCKAPI_MIGRATION_TARGET/PHASE/RECORD``; plus ``E2E_LOG`` (append-only event log), ``E2E_WORKER``,
``E2E_GENERATION`` and ``E2E_PER_GENERATION``. It loops until SIGTERM, then closes cleanly:

* the job: offers every element of generations 0..E2E_GENERATION (older ones again and again: they must
  be refused as done), takes a batch with ``lock_many``, calls the "service" under the job semaphore,
  and marks each element done (``E`` lines: element, worker, start ns, end ns);
* a leader lock ``e2e:leader`` taken now and then (``L`` lines: token, start ns, end ns).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time

import lockapi
from lockapi import Job, LockError

JOB = Job("e2e", ttl=20.0, done_ttl=3600.0, max_concurrency=2)
CALL_SECONDS = 0.01


def main() -> int:
    log_path = os.environ["E2E_LOG"]
    worker = int(os.environ["E2E_WORKER"])
    generation = int(os.environ["E2E_GENERATION"])
    per_generation = int(os.environ["E2E_PER_GENERATION"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = random.Random()
    elements = [f"{g}-{i}" for g in range(generation + 1) for i in range(per_generation)]

    def log(line: str) -> None:
        with open(log_path, "a", encoding="ascii") as f:  # one write per line: atomic with O_APPEND
            f.write(line + "\n")

    with lockapi.connect() as mgr:
        jobs, slots = mgr.jobs(), mgr.job_semaphore()
        log(f"R {worker} {generation} {os.getpid()}")
        while not stop.is_set():
            lease = mgr.try_acquire("e2e:leader", ttl=10)
            if lease is not None:
                start = time.monotonic_ns()
                time.sleep(0.002)
                end = time.monotonic_ns()
                log(f"L {lease.token} {start} {end} {worker}")
                lease.release()
            try:
                got = jobs.lock_many(JOB, rng.sample(elements, min(8, len(elements))))
            except LockError as exc:
                print(f"worker {worker}: {exc}", file=sys.stderr)
                time.sleep(0.05)
                continue
            for element in got:
                slots.acquire(JOB, wait=60)
                try:
                    start = time.monotonic_ns()
                    time.sleep(CALL_SECONDS)
                    end = time.monotonic_ns()
                    log(f"E {element} {worker} {start} {end}")
                finally:
                    slots.release(JOB)
                jobs.successfully_processed(JOB, element)
            if not got:
                time.sleep(0.05)  # an idle scheduler polls, it does not spin
    log(f"X {worker} {generation} {os.getpid()}")
    return 0


def run_in_child(env: dict[str, str], err_path: str) -> None:
    """The same as ``python -m tests.migration.e2e_worker`` with ``env`` added to the environment and
    stdout and stderr written to ``err_path``, for a child started by :data:`tests.children.CHILDREN`."""
    os.environ.update(env)
    with open(err_path, "wb") as err:
        os.dup2(err.fileno(), 1)
        os.dup2(err.fileno(), 2)
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
