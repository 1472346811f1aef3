"""Dual mode reports each side of an operation as the step span ``lockapi.migration.dual`` under the
caller's span, and a node that refuses its phase logs one structured ``phase_refused`` line under a
``lockapi.`` logger, without the password of any URL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import lockapi
from lockapi import ConfigError
from lockapi.observability.install import Instrumentation
from tests.migration.conftest import Fleet
from tests.observability.conftest import Otel


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()


def _named(otel: Otel, span: str, name: str) -> list[object]:
    return [s for s in otel.spans(span) if s.attributes is not None and s.attributes["lockapi.lock.name"] == name]


def test_dual_reports_both_sides_as_step_spans_under_the_callers_span(
        otel: Otel, instrumented: Instrumentation, fleet: Fleet) -> None:
    node = fleet.node("dual")
    lease = node.acquire("invoice:1", ttl=60)
    assert lease.release()
    legacy = fleet.h()  # holds invoice:2 on H only: dual is denied there and never asks R
    assert legacy.acquire("invoice:2", ttl=60)
    assert node.try_acquire("invoice:2") is None

    [acquire] = _named(otel, "lockapi.acquire", "invoice:1")
    [release] = _named(otel, "lockapi.release", "invoice:1")
    steps = _named(otel, "lockapi.migration.dual", "invoice:1")
    by_parent: dict[int, list[tuple[str, str]]] = {}
    for s in steps:
        assert s.parent is not None and s.attributes is not None
        by_parent.setdefault(s.parent.span_id, []).append(
            (str(s.attributes["lockapi.side"]), str(s.attributes["lockapi.outcome"])))
    assert sorted(by_parent[acquire.context.span_id]) == [("h", "granted"), ("r", "granted")]
    assert sorted(by_parent[release.context.span_id]) == [("h", "true"), ("r", "true")]
    assert all(s.attributes["lockapi.backend"] == "migration" for s in steps)

    [denied] = _named(otel, "lockapi.try_acquire", "invoice:2")
    refused = _named(otel, "lockapi.migration.dual", "invoice:2")
    assert [(s.attributes["lockapi.side"], s.attributes["lockapi.outcome"]) for s in refused] == [("h", "denied")]
    assert refused[0].parent is not None and refused[0].parent.span_id == denied.context.span_id


def _refused(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "lockapi_event", None) == "phase_refused"]


def test_a_phase_the_fleet_refuses_logs_one_structured_line(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    fleet.node("off")
    with caplog.at_level(logging.INFO, logger="lockapi"), pytest.raises(ConfigError, match="not equal or adjacent"):
        fleet.node("dual")
    [line] = _refused(caplog)
    assert line.name.startswith("lockapi.migration.") and line.levelno == logging.ERROR
    assert line.lockapi_phase == "dual" and line.lockapi_reason == "fleet"  # type: ignore[attr-defined]
    assert "node-1/" in line.lockapi_blockers and "(off)" in line.lockapi_blockers  # type: ignore[attr-defined]
    assert line.lockapi_node.startswith("node-2/")  # type: ignore[attr-defined]
    assert "refused phase 'dual'" in line.getMessage()


def test_a_phase_refused_on_open_logs_no_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The refusal that opening the backend raises (lockapi.connect() passes it on: dual without a
    record store) is logged too; the
    source's password appears neither in the line nor in its fields."""
    options = {"source": "redis://:s3cret-pw@127.0.0.1:1/0", "target": "memory://r", "phase": "dual"}
    with caplog.at_level(logging.INFO, logger="lockapi"), pytest.raises(ConfigError, match="needs record"):
        lockapi.open_backend("migration://", options)
    [line] = _refused(caplog)
    assert line.lockapi_reason == "no_record" and line.lockapi_phase == "dual"  # type: ignore[attr-defined]
    for record in caplog.records:
        assert "s3cret-pw" not in record.getMessage()
        assert all("s3cret-pw" not in str(value) for value in vars(record).values())
