"""A fleet of application processes (``tests.migration.e2e_worker``) sharing an event log, restarted one
at a time into a new phase while the others keep working; and the interval check on the log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.children import CHILDREN
from tests.migration import e2e_worker
from tests.servers.common import wait_until

PER_GENERATION = 30
WAIT = 90.0
"""Seconds allowed for anything a worker fleet must get done (shared 2-core machine)."""


@dataclass
class Events:
    elements: list[tuple[str, int, int, int]]
    leader: list[tuple[int, int, int]]
    ready: list[tuple[int, int]]


class Workers:
    """Worker processes sharing an event log; restarted one at a time into a new phase."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.log = folder / "events.log"
        self.log.touch()
        self.env = env
        self.procs: dict[int, Any] = {}
        self.folder = folder

    def start(self, worker: int, phase: str, generation: int) -> None:
        env = {**self.env, "LOCKAPI_MIGRATION_PHASE": phase, "E2E_LOG": str(self.log),
               "E2E_WORKER": str(worker), "E2E_GENERATION": str(generation),
               "E2E_PER_GENERATION": str(PER_GENERATION)}
        before = len(self.events().ready)
        err = self.folder / f"worker-{worker}-{phase}.err"
        self.procs[worker] = proc = CHILDREN.Process(target=e2e_worker.run_in_child, args=(env, str(err)),
                                                      daemon=True)
        proc.start()
        wait_until(lambda: len(self.events().ready) > before or self._died(worker), WAIT, f"worker {worker} ready")
        assert not self._died(worker), (self.folder / f"worker-{worker}-{phase}.err").read_text()

    def _died(self, worker: int) -> bool:
        return not self.procs[worker].is_alive()

    def stop(self, worker: int) -> None:
        proc = self.procs.pop(worker)
        proc.terminate()
        proc.join(WAIT)
        assert proc.exitcode == 0, proc.exitcode

    def stop_all(self) -> None:
        for worker in list(self.procs):
            self.stop(worker)

    def events(self) -> Events:
        ev = Events([], [], [])
        for line in self.log.read_text().splitlines():
            kind, *rest = line.split()
            if kind == "E":
                ev.elements.append((rest[0], int(rest[1]), int(rest[2]), int(rest[3])))
            elif kind == "L":
                ev.leader.append((int(rest[0]), int(rest[1]), int(rest[2])))
            elif kind == "R":
                ev.ready.append((int(rest[0]), int(rest[1])))
        return ev

    def wait_generation(self, generation: int) -> None:
        def finished() -> bool:
            done = {e[0] for e in self.events().elements}
            return all(f"{generation}-{i}" in done for i in range(PER_GENERATION))

        wait_until(finished, WAIT, f"every element of generation {generation} processed")



def assert_at_most(limit: int, intervals: list[tuple[int, int]]) -> None:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    inside = peak = 0
    for _, delta in edges:
        inside += delta
        peak = max(peak, inside)
    assert peak <= limit, f"{peak} overlapping holders, at most {limit} allowed"


