"""The mutual-exclusion checker: many workers, one lock, a fenced shared record, and a verdict.

The protected resource is :class:`FencedRecord`, a small JSON file guarded by ``fcntl.flock`` that holds
``(highest token seen, counter)``. Every write carries the writer's fencing token; the record rejects a
token lower than the highest it has seen (and counts the rejection), as the contract asks a protected
resource to do. A worker's update is a deliberately slow read-modify-write (read, pause, write), so two
holders that overlap lose an update, which the verdict detects even if the grant timestamps did not.

Workers append one line per grant: ``start_ns end_ns token outcome pid`` (``time.monotonic_ns()`` is
system-wide on Linux, so intervals from different processes compare). :func:`verify` reads them all and
checks: no two grants overlapped, no update was lost, tokens strictly increased in grant order.

Everything a child process runs is a module-level function here, so :data:`tests.children.CHILDREN` can
pickle it.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lockapi
from lockapi import BackendUnavailable, LeaseLost, LockTimeout
from tests.children import CHILDREN


# -- the protected resource ---------------------------------------------------------------------------
class FencedRecord:
    """``(highest, counter)`` in a JSON file; every access holds an exclusive flock on ``<path>.flock``.

    Also keeps a journal (``<path>.journal``) of accepted writes ``token counter`` and of rejections
    ``REJECT token highest``, for the verdict.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.journal = self.path.with_suffix(".journal")
        self._guard = self.path.with_suffix(".flock")

    def create(self) -> FencedRecord:
        self.path.write_text(json.dumps({"highest": 0, "counter": 0, "accepted": 0, "rejected": 0}))
        self.journal.write_text("")
        self._guard.touch()
        return self

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, int]]:
        with open(self._guard, "a+") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                state = json.loads(self.path.read_text())
                before = dict(state)
                yield state
                if state != before:
                    tmp = self.path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
                    tmp.write_text(json.dumps(state))
                    tmp.replace(self.path)
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def _reject(self, state: dict[str, int], token: int) -> None:
        state["rejected"] += 1
        with open(self.journal, "a") as journal:
            journal.write(f"REJECT {token} {state['highest']}\n")

    def read(self, token: int) -> int | None:
        """The counter, or None (and a recorded rejection) if ``token`` is below the highest seen."""
        with self._locked() as state:
            if token < state["highest"]:
                self._reject(state, token)
                return None
            return state["counter"]

    def write(self, token: int, counter: int) -> bool:
        """Store ``counter`` if ``token`` is not below the highest seen; False (recorded) otherwise."""
        with self._locked() as state:
            if token < state["highest"]:
                self._reject(state, token)
                return False
            state["highest"] = token
            state["counter"] = counter
            state["accepted"] += 1
            with open(self.journal, "a") as journal:
                journal.write(f"{token} {counter}\n")
            return True

    def increment(self, token: int, pause: float = 0.0) -> bool:
        """A read-modify-write under ``token`` (not atomic: ``pause`` seconds between read and write)."""
        value = self.read(token)
        if value is None:
            return False
        if pause:
            time.sleep(pause)
        return self.write(token, value + 1)

    def state(self) -> dict[str, int]:
        with self._locked() as state:
            return dict(state)

    def journal_entries(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(accepted ``(token, counter)``, rejected ``(token, highest)``) in journal order."""
        accepted, rejected = [], []
        for line in self.journal.read_text().splitlines():
            parts = line.split()
            if parts[0] == "REJECT":
                rejected.append((int(parts[1]), int(parts[2])))
            else:
                accepted.append((int(parts[0]), int(parts[1])))
        return accepted, rejected


# -- the worker ---------------------------------------------------------------------------------------
def contend(url: str, options: dict[str, Any], name: str, rounds: int, record_path: str, out_path: str,
            ttl: float, pause: float, start: Any, tolerate_unavailable: bool = False,
            wait: float = 120.0) -> None:
    """Take ``name`` ``rounds`` times and increment the record under each grant.

    Writes one line per grant to ``out_path`` and, at the end, a ``#`` line with error counts.
    ``start`` (an Event) is waited for after connecting, so every worker contends at once.
    With ``tolerate_unavailable``, a :class:`BackendUnavailable` (a fault in progress) is counted and
    retried instead of ending the worker.
    """
    record = FencedRecord(record_path)
    lines: list[str] = []
    errors = {"unavailable": 0, "timeout": 0, "lost": 0}
    with lockapi.connect(url, **options) as mgr:
        start.wait(120)
        done = 0
        while done < rounds:
            try:
                with mgr.acquire(name, ttl=ttl, wait=wait) as lease:
                    began = time.monotonic_ns()
                    ok = record.increment(lease.token, pause)
                    ended = time.monotonic_ns()
                    lines.append(f"{began} {ended} {lease.token} {int(ok)} {os.getpid()}\n")
                    done += 1
            except LeaseLost:
                errors["lost"] += 1
            except BackendUnavailable:
                if not tolerate_unavailable:
                    raise
                errors["unavailable"] += 1
                time.sleep(0.05)
            except LockTimeout:
                if not tolerate_unavailable:
                    raise
                errors["timeout"] += 1
    lines.append("# " + json.dumps(errors) + "\n")
    Path(out_path).write_text("".join(lines))


# -- running and judging ------------------------------------------------------------------------------
@dataclass
class Grant:
    start: int
    end: int
    token: int
    accepted: bool
    pid: int


@dataclass
class Verdict:
    grants: list[Grant]
    record: dict[str, int]
    errors: dict[str, int]
    seconds: float
    overlaps: list[tuple[Grant, Grant]] = field(default_factory=list)
    token_regressions: list[tuple[Grant, Grant]] = field(default_factory=list)
    journal_regressions: list[tuple[int, int]] = field(default_factory=list)

    @property
    def span(self) -> float:
        """Seconds from the first grant to the end of the last."""
        return (self.grants[-1].end - self.grants[0].start) / 1e9 if self.grants else 0.0

    @property
    def rate(self) -> float:
        """Grants per second while the workers contended."""
        return len(self.grants) / self.span if self.span else 0.0

    def problems(self, expected_grants: int | None = None) -> list[str]:
        """Everything wrong, in words (empty when the run was clean)."""
        out = []
        if self.overlaps:
            a, b = self.overlaps[0]
            out.append(f"{len(self.overlaps)} overlapping grants, e.g. token {a.token} (pid {a.pid}) "
                       f"ended {(a.end - b.start) / 1e6:.3f} ms after token {b.token} (pid {b.pid}) started")
        if self.token_regressions:
            a, b = self.token_regressions[0]
            out.append(f"tokens not increasing in grant order: {a.token} then {b.token}")
        if self.journal_regressions:
            out.append(f"record accepted non-increasing tokens: {self.journal_regressions[:3]}")
        accepted = sum(g.accepted for g in self.grants)
        if self.record["counter"] != accepted or self.record["accepted"] != accepted:
            out.append(f"lost update: counter {self.record['counter']} after {accepted} accepted "
                       f"increments (record says {self.record['accepted']} accepted)")
        if self.record["rejected"] != len(self.grants) - accepted:
            out.append(f"record rejected {self.record['rejected']} writes, workers saw "
                       f"{len(self.grants) - accepted}")
        if expected_grants is not None and len(self.grants) != expected_grants:
            out.append(f"{len(self.grants)} grants, expected {expected_grants}")
        return out


def verify(out_paths: list[Path], record: FencedRecord, seconds: float) -> Verdict:
    grants: list[Grant] = []
    errors: dict[str, int] = {}
    for path in out_paths:
        for line in path.read_text().splitlines():
            if line.startswith("# "):
                for key, value in json.loads(line[2:]).items():
                    errors[key] = errors.get(key, 0) + value
                continue
            start, end, token, ok, pid = map(int, line.split())
            grants.append(Grant(start, end, token, bool(ok), pid))
    grants.sort(key=lambda g: g.start)
    verdict = Verdict(grants, record.state(), errors, seconds)
    for a, b in itertools.pairwise(grants):
        if b.start < a.end:
            verdict.overlaps.append((a, b))
        if b.token <= a.token:
            verdict.token_regressions.append((a, b))
    accepted, _ = record.journal_entries()
    verdict.journal_regressions = [(a[0], b[0]) for a, b in itertools.pairwise(accepted) if b[0] <= a[0]]
    return verdict


@dataclass
class CheckerRun:
    """A checker run in progress: started by :func:`start_checker`, judged by :meth:`finish`."""

    procs: list[Any]
    outs: list[Path]
    record: FencedRecord
    started: float
    go: Any

    def finish(self, timeout: float = 300.0) -> Verdict:
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        seconds = time.monotonic() - self.started
        hung = [p for p in self.procs if p.is_alive()]
        for proc in hung:  # our own children, by pid
            proc.kill()
            proc.join(10)
        assert not hung, f"{len(hung)} checker workers still running after {timeout:.0f}s"
        codes = [getattr(p, "exitcode", 0) for p in self.procs]
        assert all(c in (0, None) for c in codes), f"checker workers failed: exit codes {codes}"
        missing = [o for o in self.outs if not o.exists()]
        assert not missing, f"workers wrote no output: {missing} (they raised; see captured stderr)"
        return verify(self.outs, self.record, seconds)


class _ThreadProc(threading.Thread):
    """A thread with the bits of the Process API the checker uses (for in-process backends)."""

    def __init__(self, target: Any, args: tuple[Any, ...]) -> None:
        super().__init__(target=self._run_target, args=(target, args), daemon=True)
        self.exitcode: int | None = None

    def _run_target(self, target: Any, args: tuple[Any, ...]) -> None:
        try:
            target(*args)
            self.exitcode = 0
        except BaseException:
            self.exitcode = 1
            raise

    def kill(self) -> None:  # a thread cannot be killed; finish() reports it as hung
        pass


def start_checker(url: str, options: dict[str, Any], folder: Path, *, name: str, workers: int = 8,
                  rounds: int = 25, ttl: float = 30.0, pause: float = 0.002, threads: bool = False,
                  tolerate_unavailable: bool = False) -> CheckerRun:
    """Start ``workers`` processes (threads if ``threads``) contending for ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    record = FencedRecord(folder / "record.json").create()
    outs = [folder / f"worker-{i}.txt" for i in range(workers)]
    go: Any = threading.Event() if threads else CHILDREN.Event()
    procs: list[Any] = []
    for out in outs:
        args = (url, options, name, rounds, str(record.path), str(out), ttl, pause, go, tolerate_unavailable)
        proc = _ThreadProc(contend, args) if threads else CHILDREN.Process(target=contend, args=args)
        proc.start()
        procs.append(proc)
    started = time.monotonic()
    go.set()
    return CheckerRun(procs, outs, record, started, go)


def run_checker(url: str, options: dict[str, Any], folder: Path, **kwargs: Any) -> Verdict:
    return start_checker(url, options, folder, **kwargs).finish()


# -- fault workers ------------------------------------------------------------------------------------
def hold_and_hang(url: str, options: dict[str, Any], name: str, ttl: float, out_path: str, ready: Any) -> None:
    """Take ``name``; write ``request_ns grant_ns token``; signal ``ready``; then hang until killed."""
    with lockapi.connect(url, **options) as mgr:
        requested = time.monotonic_ns()
        lease = mgr.acquire(name, ttl=ttl, wait=60)
        granted = time.monotonic_ns()
        Path(out_path).write_text(f"{requested} {granted} {lease.token}")
        ready.set()
        threading.Event().wait(600)  # the test SIGKILLs this process long before


def paused_holder(url: str, options: dict[str, Any], names: list[str], ttl: float, record_path: str,
                  out_path: str, ready: Any, go: Any) -> None:
    """Hold ``names[0]`` (released by hand) and ``names[1]`` (in a ``with`` block); write under the first.

    Busy until ``go`` is set (the test SIGSTOPs it meanwhile), then, as a holder that does not know
    it was paused: writes to the record with its token, calls ``release()``, leaves the ``with`` block.
    Writes a JSON report of what happened.
    """
    record = FencedRecord(record_path)
    report: dict[str, Any] = {}
    with lockapi.connect(url, **options) as mgr:
        first = mgr.acquire(names[0], ttl=ttl, wait=60)
        second = mgr.acquire(names[1], ttl=ttl, wait=60)
        report["tokens"] = [first.token, second.token]
        report["write_before"] = record.increment(first.token)
        try:
            with second:
                ready.set()
                while not go.wait(0.01):  # "working"; SIGSTOP freezes it here
                    pass
                report["lost_flag"] = first.lost
                report["write_after"] = record.increment(first.token)
                report["release"] = first.release()
            report["exit"] = "no error"
        except LeaseLost as exc:
            report["exit"] = f"LeaseLost: {exc}"
        except Exception as exc:
            report["exit"] = f"{type(exc).__name__}: {exc}"
    Path(out_path).write_text(json.dumps(report))
