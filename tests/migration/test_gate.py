"""``lockapi migrate check``: safe defaults with no flags, the phase from the registry or the
configuration, only the records of the phase asked about, lag, and consistent exit codes."""

from __future__ import annotations

import pytest
from lockapi_migration.records.model import GRANTED, Record, Side
from lockapi_migration.records.store import LagSample
from lockapi_migration.tooling.check import DEFAULTS

from lockapi.cli import main as lockapi_main
from tests.migration.conftest import Fleet, backend_of
from tests.servers.common import free_port

EXIT_OK, EXIT_NOT_SAFE, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 1, 2, 3


@pytest.fixture
def configured(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    """The operator's environment: the same configuration the fleet uses."""
    monkeypatch.delenv("LOCKAPI_CONFIG", raising=False)
    monkeypatch.setenv("LOCKAPI_URL", fleet.h_url)
    monkeypatch.setenv("LOCKAPI_MIGRATION_TARGET", fleet.r_url)
    monkeypatch.setenv("LOCKAPI_MIGRATION_RECORD", fleet.record)
    monkeypatch.setenv("LOCKAPI_MIGRATION_PHASE", "shadow")
    return fleet


def _cycles(fleet: Fleet, phase: str, count: int, prefix: str) -> None:
    node = fleet.node(phase)
    for i in range(count):
        node.try_acquire(f"{prefix}:{i % 50}", ttl=5).release()  # type: ignore[union-attr]
    backend_of(node).flush()
    node.close()


def test_check_with_no_flags_gives_the_documented_verdict(configured: Fleet,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #18: the three required flags now have safe defaults, and with the fleet stopped the phase
    comes from the configuration instead of "no live nodes in the registry"."""
    _cycles(configured, "shadow", 100, "few")  # 200 compared decisions: below the default minimum
    assert lockapi_main(["migrate", "check"]) == EXIT_NOT_SAFE
    out = capsys.readouterr().out
    assert "NOT SAFE to advance from shadow to dual (phase from the configuration" in out
    assert f"only 200 compared decisions in shadow, need at least {DEFAULTS.min_decisions}" in out
    _cycles(configured, "shadow", DEFAULTS.min_decisions // 2, "more")
    assert lockapi_main(["migrate", "check"]) == EXIT_OK
    assert "SAFE to advance from shadow to dual" in capsys.readouterr().out


def test_every_check_flag_has_help_and_a_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        lockapi_main(["migrate", "check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--max-false-grants", "0"), ("--max-false-deny-rate", "0.001"),
                          ("--min-decisions", "1000"), ("--max-lag", "1"), ("--max-error-rate", "0.01")):
        assert flag in text and f"default {default})" in text, flag


def test_the_gate_judges_only_the_records_of_the_phase_asked(configured: Fleet,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #18: `check --phase dual` counted every record since the dual nodes started, mostly the
    shadow nodes' running next to them, and said "safe" on a handful of dual decisions."""
    shadow, dual = configured.node("shadow"), configured.node("dual")
    for i in range(60):
        shadow.try_acquire(f"s:{i}", ttl=5).release()  # type: ignore[union-attr]
    for i in range(3):
        dual.try_acquire(f"d:{i}", ttl=5).release()  # type: ignore[union-attr]
    backend_of(shadow).flush()
    backend_of(dual).flush()
    gate = ["migrate", "check", "--phase", "dual", "--min-decisions", "20", "--done-ttl", "0"]
    assert lockapi_main(gate) == EXIT_NOT_SAFE
    assert "only 6 compared decisions in dual, need at least 20" in capsys.readouterr().out
    assert lockapi_main(["migrate", "check"]) == EXIT_NOT_SAFE  # the registry: mid-rollout
    assert "mid-rollout" in capsys.readouterr().out


def test_a_lagging_replay_fails_the_gate(configured: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    _cycles(configured, "shadow", 20, "lag")
    store = configured.store()
    try:
        node = next(r.node for r in store.records())
        minute = next(r.ts for r in store.records()) // 60 * 60
        store.append_lag([LagSample(node, minute, 100, 0.5, 25.0, 27.6, 40, 0, 0.0, 1.0)])
    finally:
        store.close()
    assert lockapi_main(["migrate", "check", "--min-decisions", "1"]) == EXIT_NOT_SAFE
    assert "lagged 25.00 s (p99) behind the application, more than --max-lag 1 s" in capsys.readouterr().out


def test_exit_codes_say_configuration_error_unavailable_or_not_safe(
        configured: Fleet, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("LOCKAPI_MIGRATION_PHASE")
    assert lockapi_main(["migrate", "check"]) == EXIT_CONFIG  # no live node, nothing configured
    assert "pass --phase" in capsys.readouterr().err
    assert lockapi_main(["migrate", "check", "--record", f"redis://127.0.0.1:{free_port()}?timeout=0.5"]) \
        == EXIT_UNAVAILABLE
    monkeypatch.delenv("LOCKAPI_MIGRATION_RECORD")
    monkeypatch.delenv("LOCKAPI_MIGRATION_TARGET")
    assert lockapi_main(["migrate", "status"]) == EXIT_CONFIG
    assert "no record store" in capsys.readouterr().err
    store = configured.store()
    try:
        store.append([Record(1.0, "n", "shadow", "acquire", "x", "a", 5.0, Side(GRANTED, 1), Side(GRANTED, 2))])
    finally:
        store.close()
    assert lockapi_main(["migrate", "check", "--record", configured.record, "--phase", "shadow"]) == EXIT_NOT_SAFE
