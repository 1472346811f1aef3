"""The mutual-exclusion checker on every backend: 8 processes, one lock, a fenced read-modify-write."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.checker import FencedRecord, run_checker
from tests.reliability.targets import Target

WORKERS = 8
ROUNDS = 25


def test_checker_detects_what_it_claims_to(tmp_path: Path) -> None:
    """The checker itself: a stale token is rejected and an unprotected overlap loses an update."""
    record = FencedRecord(tmp_path / "r.json").create()
    assert record.increment(5) is True
    assert record.increment(4) is False  # stale token
    assert record.increment(5) is True   # the same holder again
    state = record.state()
    assert (state["highest"], state["counter"], state["accepted"], state["rejected"]) == (5, 2, 2, 1)
    # Two "holders" interleaving read and write with the same token: one increment is lost.
    a, b = record.read(6), record.read(6)
    assert a == b == 2
    record.write(6, a + 1)
    record.write(6, b + 1)
    state = record.state()
    assert (state["accepted"], state["counter"]) == (4, 3)  # the lost update verify() reports


def test_no_overlap_no_lost_update_tokens_increase(target: Target, name: str, tmp_path: Path,
                                                   record_property: pytest.RecordProperty) -> None:
    verdict = run_checker(target.url, target.options, tmp_path / "checker", name=name, workers=WORKERS,
                          rounds=ROUNDS, threads=not target.processes)
    record_property("grants_per_s", f"{verdict.rate:.1f}")
    print(f"\nchecker {target.id}: {len(verdict.grants)} grants by {WORKERS} "
          f"{'processes' if target.processes else 'threads'} in {verdict.span:.1f}s "
          f"({verdict.rate:.0f}/s)")
    assert verdict.problems(expected_grants=WORKERS * ROUNDS) == []
    assert verdict.record["counter"] == WORKERS * ROUNDS
    assert verdict.record["rejected"] == 0
    assert verdict.errors == {"unavailable": 0, "timeout": 0, "lost": 0}
    assert len({g.pid for g in verdict.grants}) == (WORKERS if target.processes else 1)
