"""The exactly-once run of the job API: worker processes share a job's elements, a fenced ledger records
what they do, and the test kills (SIGKILL) and stops (SIGSTOP past the ttl) workers at random.

The ledger stands for the outside service the job calls. Per element it keeps the highest fencing token
it has seen and whether the element was committed. A worker, for each element it got from
``lock_many``: ``begin(token)`` (refused if a higher token was seen: a stale holder), does some work,
``commit(token)`` (refused unless ``token`` is still the highest and nothing was committed), then
``successfully_processed``; after a refused step it unlocks the element instead (the service did nothing,
so the element must stay to do). Every step is journalled with the worker's pid and ``time.monotonic_ns()``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import functools
import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lockapi
from lockapi import Job

JOB = "exactly-once"


class Ledger:
    """A fenced record per element and the journal, in one JSON file replaced atomically (a worker
    killed mid-write leaves the previous version), under ``fcntl.flock`` on a lock file beside it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = self.path.with_suffix(".lock")
        self._journal: list[dict[str, Any]] = []

    def create(self, elements: list[str]) -> Ledger:
        self._lock.touch()
        self.path.write_text(json.dumps({"records": {e: {"highest": 0, "committed": None} for e in elements},
                                         "journal": []}))
        return self

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        with self._lock.open("r") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = json.loads(self.path.read_text())
            self._journal = data["journal"]
            yield data["records"]
            scratch = self.path.with_suffix(f".{os.getpid()}.tmp")
            scratch.write_text(json.dumps(data))
            os.replace(scratch, self.path)

    def _log(self, kind: str, element: str, token: int, **extra: Any) -> None:
        self._journal.append({"kind": kind, "element": element, "token": token, "pid": os.getpid(),
                              "at": time.monotonic_ns(), **extra})

    def begin(self, element: str, token: int, granted_at: int, lost: Callable[[], bool]) -> bool:
        """Record the start of work on ``element`` under ``token``; False (refused) for a stale token.
        ``lost()`` is asked after the decision: False then proves the lease was live when it was made."""
        with self._locked() as state:
            record = state[element]
            ok = token > record["highest"]
            if ok:
                record["highest"] = token
            self._log("begin" if ok else "stale_begin", element, token, granted_at=granted_at, lost=lost(),
                      after_commit=record["committed"] is not None)
        return ok

    def commit(self, element: str, token: int, granted_at: int, lost: Callable[[], bool]) -> bool:
        """Commit the work on ``element``: accepted if ``token`` is still the highest and nothing was
        committed before."""
        with self._locked() as state:
            record = state[element]
            ok = record["highest"] == token and record["committed"] is None
            if ok:
                record["committed"] = token
            self._log("commit" if ok else "rejected_commit", element, token, granted_at=granted_at, lost=lost())
        return ok

    def marked(self, element: str, token: int, started: int, *, lost: bool) -> None:
        """Journal that ``successfully_processed`` (started at ``started``) wrote the done marker, and
        whether it reported the lease lost."""
        with self._locked():
            self._log("marked", element, token, started=started, lost=lost)

    def uncommitted(self) -> list[str]:
        with self._locked() as state:
            return [e for e, record in state.items() if record["committed"] is None]

    def pending(self) -> list[str]:
        """What :meth:`uncommitted` returns, read without the lock (the file is replaced atomically, so
        any version read is whole): for the test, which must never wait on a worker it has SIGSTOPped
        inside the lock, since only the test can SIGCONT it."""
        return [e for e, record in self.state().items() if record["committed"] is None]

    def state(self) -> dict[str, dict[str, Any]]:
        return dict(json.loads(self.path.read_text())["records"])

    def entries(self) -> list[dict[str, Any]]:
        return list(json.loads(self.path.read_text())["journal"])


def worker(url: str, options: dict[str, Any], ledger_path: str, ttl: float, seed: int) -> None:
    """Process elements until the ledger has none left uncommitted. SIGUSR1 prints its stacks (stderr)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    rng = random.Random(seed)
    ledger = Ledger(ledger_path)
    job = Job(JOB, ttl=ttl, done_ttl=3600)
    with lockapi.connect(url, **options) as mgr:
        jobs = mgr.jobs()
        everything = list(ledger.state())
        while pending := ledger.uncommitted():
            # Half of each batch comes from a stale view (every element, done or not), as a scheduler
            # reading "pending invoices" from a lagging source would offer them: the done markers must
            # keep processed ones out.
            offer = rng.sample(pending, min(4, len(pending))) + rng.sample(everything, 4)
            granted_at = time.monotonic_ns()
            try:
                got = jobs.lock_many(job, offer)
            except lockapi.BackendUnavailable:
                continue  # a slow moment of a shared machine: a real worker retries too

            if not got:
                time.sleep(0.01)  # everything left is held by others: let them finish
                continue
            for element in got:
                lease = jobs._held[job.lock_name(element)]  # the element's lease: its fencing token
                was_lost = functools.partial(getattr, lease, "lost")
                done = ledger.begin(element, lease.token, granted_at, was_lost)
                if done:
                    time.sleep(rng.uniform(0.02, 0.08))  # the outside call
                    done = ledger.commit(element, lease.token, granted_at, was_lost)
                if not done:
                    # The service refused this token: nothing was done, so the element must not be
                    # marked done (the holder of the higher token may yet die before committing).
                    with contextlib.suppress(lockapi.BackendUnavailable):
                        jobs.unlock(job, element)
                    continue
                marking = time.monotonic_ns()
                try:
                    jobs.successfully_processed(job, element)
                    lost = False
                except lockapi.LeaseLost:
                    lost = True
                except lockapi.BackendUnavailable:
                    continue  # not known to be marked: journalled like a worker killed before marking
                ledger.marked(element, lease.token, marking, lost=lost)


@dataclass
class Fault:
    """A fault the test injected into one worker: SIGSTOP until SIGCONT, or SIGKILL (``end`` None)."""

    pid: int
    start: int
    end: int | None
    """monotonic ns of the signal and of SIGCONT (None for SIGKILL: the process never came back)."""


def problems(ledger: Ledger) -> list[str]:
    """What broke the exactly-once promise, judged by what the lock told each worker.

    A worker whose lease ran out (killed, stopped past its ttl, or just slow) may act on a stale
    lease; the fence then refuses it, or, for its first write, the next holder redoes the element. Both
    are excused only when the lock TOLD the stale worker (``lease.lost`` at that step, ``LeaseLost``
    from ``successfully_processed``) or the worker was killed before it could be told. Anything else is
    a bug: a refused step of a worker that still held its lease, a worker redoing an element whose
    committer kept its lease to the end, two workers inside one element's lease at once, or an element
    not committed exactly once.
    """
    entries = ledger.entries()
    by_key = {(e["kind"], e["element"], e["pid"], e["token"]): e for e in entries}
    commits = {e["element"]: e for e in entries if e["kind"] == "commit"}
    begins = [e for e in entries if e["kind"] == "begin"]

    def committer_was_told(element: str) -> bool:
        commit = commits[element]
        marked = by_key.get(("marked", element, commit["pid"], commit["token"]))
        return marked is None or marked["lost"]  # killed before marking, or told the lease was lost

    found = []
    for e in entries:
        what = f"{e['kind']} of {e['element']} (token {e['token']}, pid {e['pid']})"
        if e["kind"] == "stale_begin" and not e["lost"]:
            found.append(f"{what}: a higher token was seen while this lease was live (two holders)")
        elif e["kind"] == "begin" and e["after_commit"] and not committer_was_told(e["element"]):
            found.append(f"{what}: begun again although its committer kept its lease (done check skipped?)")
        elif e["kind"] == "rejected_commit" and not e["lost"]:
            begin = by_key.get(("begin", e["element"], e["pid"], e["token"]))
            if begin is None or not (begin["after_commit"] and committer_was_told(e["element"])):
                found.append(f"{what}: refused while this lease was live")
    for element, commit in commits.items():
        marked = by_key.get(("marked", element, commit["pid"], commit["token"]))
        if marked is None or marked["lost"]:
            continue
        own = by_key[("begin", element, commit["pid"], commit["token"])]
        for other in begins:  # the committer held from its begin to its release: nobody may begin inside
            if other["element"] == element and other is not own and own["at"] < other["at"] < marked["started"]:
                found.append(f"{element}: pid {other['pid']} began (token {other['token']}) while pid "
                             f"{commit['pid']} still held it (token {commit['token']})")
    counts: dict[str, int] = {}
    for e in entries:
        if e["kind"] == "commit":
            counts[e["element"]] = counts.get(e["element"], 0) + 1
    for element in ledger.state():
        if counts.get(element) != 1:
            found.append(f"{element} committed {counts.get(element, 0)} times")
    return found
