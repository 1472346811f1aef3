"""``lockapi demo``: the scenario lockapi exists for, played on the configured backend.

Several scheduled-task workers share one job over a batch of invoices. Each invoice must reach a slow
outside service exactly once, and the service accepts at most K concurrent calls. Workers use only the
public API: ``JobLockManager.lock_many`` / ``successfully_processed`` / ``unlock`` and ``JobSemaphore``.
The "service" is an append-only log: every call writes its element, worker and start/end times, and the
verdict is computed from that log alone.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import lockapi
from lockapi import Capability, Job


@dataclass(frozen=True)
class DemoSettings:
    url: str | None
    workers: int = 4
    elements: int = 1000
    concurrency: int = 3
    call_ms: float = 2.0
    batch: int = 25


@dataclass
class Verdict:
    per_worker: dict[int, int]
    sent_twice: int
    never_sent: int
    peak_concurrency: int
    seconds: float
    elements: int
    concurrency: int
    failed_workers: int = 0
    startup: float = 0.0
    """Seconds the workers took to start and connect (not part of ``seconds``)."""

    @property
    def ok(self) -> bool:
        return (self.sent_twice == 0 and self.never_sent == 0 and self.failed_workers == 0
                and self.peak_concurrency <= self.concurrency)

    def render(self) -> str:
        lines = ["", "per worker: " + ", ".join(f"#{w}: {n}" for w, n in sorted(self.per_worker.items()))]
        lines.append(f"elements sent twice:     {self.sent_twice}  (must be 0)")
        lines.append(f"elements never sent:     {self.never_sent}  (must be 0)")
        lines.append(f"peak concurrent calls:   {self.peak_concurrency}  (must be <= {self.concurrency})")
        rate = self.elements / self.seconds if self.seconds > 0 else 0.0
        if self.failed_workers:
            lines.append(f"workers that failed:     {self.failed_workers}  (must be 0)")
        lines.append(f"throughput:              {rate:.0f} elements/s ({self.elements} in {self.seconds:.2f} s, "
                     f"timed once every worker had connected; start-up took {self.startup:.2f} s)")
        lines.append("OK: every invariant held" if self.ok else "FAILED: an invariant broke")
        return "\n".join(lines)


def _call_service(log: Path, element: int, worker: int, call_ms: float) -> None:
    start = time.monotonic_ns()
    time.sleep(call_ms / 1000)
    end = time.monotonic_ns()
    with open(log, "a", encoding="ascii") as f:  # one write() per line: atomic with O_APPEND
        f.write(f"{element} {worker} {start} {end}\n")


def run_worker(settings: DemoSettings, job_name: str, worker: int, log: str, start: Any = None) -> None:
    """One worker: claim batches, call the service under the job semaphore, mark elements done.

    ``start`` (a barrier shared by the workers and the caller), if given, is passed once connected, so the
    run is timed without the workers' start-up."""
    job = Job(job_name, ttl=60.0, done_ttl=3600.0, max_concurrency=settings.concurrency)
    pending = list(range(settings.elements))
    random.Random(worker).shuffle(pending)
    with lockapi.connect(settings.url) as mgr:
        jobs, slots = mgr.jobs(), mgr.job_semaphore()
        mgr.ping()
        if start is not None:
            start.wait()
        while pending:
            batch, pending = pending[: settings.batch], pending[settings.batch :]
            got = jobs.lock_many(job, batch)
            for element in got:
                with slots.acquire(job, wait=120):
                    _call_service(Path(log), element, worker, settings.call_ms)
                jobs.successfully_processed(job, element)
            taken = set(got)
            # Not granted: done already, or in progress elsewhere. Come back to the unfinished ones.
            unfinished = [e for e in batch if e not in taken and not jobs.is_processed(job, e)]
            if unfinished:
                pending.extend(unfinished)
                if not got:
                    time.sleep(0.01)


def judge(log: Path, settings: DemoSettings, seconds: float) -> Verdict:
    calls = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    counts = Counter(c[0] for c in calls)
    events = sorted([(c[2], 1) for c in calls] + [(c[3], -1) for c in calls], key=lambda e: (e[0], e[1]))
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return Verdict(
        per_worker=dict(Counter(c[1] for c in calls)),
        sent_twice=sum(1 for n in counts.values() if n > 1),
        never_sent=settings.elements - len(counts),
        peak_concurrency=peak,
        seconds=seconds,
        elements=settings.elements,
        concurrency=settings.concurrency,
    )


def _progress(log: Path, total: int, stop: threading.Event, out: TextIO) -> None:
    """A bar redrawn in place on a terminal; a line per quarter elsewhere (logs, CI)."""
    width, tty, shown = 40, out.isatty(), -1
    while True:
        finished = stop.wait(0.2)
        try:
            done = min(log.read_bytes().count(b"\n"), total)
        except OSError:
            done = 0
        if tty:
            filled = width * done // total
            out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}" + ("\n" if finished else ""))
        elif 4 * done // total > shown:
            shown = 4 * done // total
            out.write(f"{done}/{total} sent\n")
        out.flush()
        if finished:
            return


START_TIMEOUT = 120.0
"""Seconds the workers get to start and connect; a worker that fails to start breaks the barrier."""


def _all_ready(start: Any) -> float:
    """Wait until every worker has connected; the moment the run is timed from."""
    # a worker that died or never connected breaks the barrier: the others fail on it, the verdict says so
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait(START_TIMEOUT)
    return time.monotonic()


def run(settings: DemoSettings, out: TextIO = sys.stdout, workdir: Path | None = None) -> Verdict:
    """Play the demo; return the verdict (also printed to ``out``)."""
    with lockapi.connect(settings.url) as mgr:
        shown, processes = mgr.url, Capability.MULTI_PROCESS in mgr.capabilities
        mgr.ping()
    job_name = f"demo-invoices-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    kind = "processes" if processes else "threads (backend is in-process only)"
    out.write(f"lockapi demo on {shown}: {settings.workers} worker {kind}, {settings.elements} invoices, "
              f"at most {settings.concurrency} concurrent calls\n")
    folder = workdir or Path.cwd()
    log = folder / f".lockapi-demo-{os.getpid()}-{secrets.token_hex(3)}.log"
    log.touch()
    stop = threading.Event()
    bar = threading.Thread(target=_progress, args=(log, settings.elements, stop, out), daemon=True)
    launched = time.monotonic()
    bar.start()
    try:
        if processes:
            ctx = multiprocessing.get_context("spawn")
            start: Any = ctx.Barrier(settings.workers + 1)
            args = [(settings, job_name, w, str(log), start) for w in range(settings.workers)]
            procs = [ctx.Process(target=run_worker, args=a) for a in args]
            for p in procs:
                p.start()
            started = _all_ready(start)
            for p in procs:
                p.join()
            failed = [p.exitcode for p in procs if p.exitcode != 0]
        else:
            errors: list[BaseException] = []
            start = threading.Barrier(settings.workers + 1)

            def thread_main(w: int) -> None:
                try:
                    run_worker(settings, job_name, w, str(log), start)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=thread_main, args=(w,)) for w in range(settings.workers)]
            for t in threads:
                t.start()
            started = _all_ready(start)
            for t in threads:
                t.join()
            failed = [1 for _ in errors]
        seconds = time.monotonic() - started
        stop.set()
        bar.join()
        verdict = judge(log, settings, seconds)
        verdict.failed_workers = len(failed)
        verdict.startup = started - launched
    finally:
        stop.set()
        log.unlink(missing_ok=True)
    out.write(verdict.render() + "\n")
    return verdict
