"""The benchmark harness runs end to end in quick mode on memory:// and SQLite and writes a sane report.

Not a timed test: it only checks that every section produced positive numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.benchmarks.__main__ import run


def test_quick_run_writes_a_report(tmp_path: Path) -> None:
    out = run(["--quick", "--groups", "memory,sqlite", "--out", str(tmp_path / "benchmarks.md")])
    text = out.read_text()
    for heading in ("## Targets", "## Uncontended acquire+release cycles", "## Hand-off latency", "## Contention",
                    "## Batch claim", "## Notes"):
        assert heading in text, heading

    def first_numbers(row_start: str) -> list[float]:
        """The first "median (min-max)" figure of every table row starting with ``row_start``."""
        found = []
        for row in (line for line in text.splitlines() if line.startswith(row_start)):
            cells = [c.strip() for c in row.strip("|").split("|")]
            value = next(c for c in cells[2:] if re.match(r"[\d,.]+ \(", c))
            found.append(float(value.split()[0].replace(",", "")))
        return found

    memory = first_numbers("| memory | lockapi memory:// |")
    sqlite = first_numbers("| sqlite | lockapi sqlite |")
    assert len(memory) == 1 and memory[0] > 0  # cycles/s (in-process only: no hand-off or contention)
    assert len(sqlite) == 3 and all(v > 0 for v in sqlite)  # cycles/s, hand-off p50, contention grants/s
    # memory, sqlite and sqlite synchronous=full
    batch = [line for line in text.splitlines() if line.startswith("| lockapi") and "`acquire_many`" in line]
    assert len(batch) == 3 and all(float(b.split("|")[2].split()[0].replace(",", "")) > 0 for b in batch)
    svgs = sorted(p.name for p in (tmp_path / "img").glob("*.svg"))
    assert "bench_cycles_lockapi.svg" in svgs and "bench_batch.svg" in svgs
    for svg in svgs:
        assert (tmp_path / "img" / svg).read_text().startswith("<svg")


def test_the_overhead_section_measures_each_adapter_against_plain(redis_standalone: Any) -> None:
    from tests.benchmarks.bench_overhead import OVERHEAD_SUBJECTS, _measure_here, rows

    (rates, cpu), notes = _measure_here({"redis_url": redis_standalone.url}, 1, 0.06)
    assert notes == [] and set(rates) == set(cpu) == set(OVERHEAD_SUBJECTS)
    assert all(f.median > 0 for f in (*rates.values(), *cpu.values()))
    table = rows((rates, cpu))
    assert len(table) == 4 and all(r[2].endswith("x") for r in table[1:])


def test_the_migration_section_measures_every_pace_and_phase_in_blocks(redis_standalone: Any, tmp_path: Path) -> None:
    from tests.benchmarks.bench_migration import BLOCK, PACES, PHASES, measure

    env = {"groups": ("sqlite", "redis"), "sqlite_url": f"sqlite:///{tmp_path / 'h.db'}",
           "redis_url": redis_standalone.url}
    notes: list[str] = []
    mg = measure(env, runs=2, ops=2 * BLOCK, notes=notes)
    assert notes == [] and mg is not None and mg.source == "sqlite" and mg.blocks == 2
    assert set(mg.p50_us) == set(mg.p99_us) == {(pace, p) for pace in PACES for p in PHASES}
    assert all(len(f.runs) == 2 and 0 < f.median <= mg.p99_us[k].median for k, f in mg.p50_us.items())
    assert set(mg.vs_off) == {(pace, p) for pace in PACES for p in ("shadow", "dual")}
    assert all(len(f.runs) == 2 and f.median > 0 for f in mg.vs_off.values())
