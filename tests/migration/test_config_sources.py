"""Issue #13 (10): the ``[lockapi.migration]`` table applies whatever source the URL came from.

Before the fix, a URL from ``$LOCKAPI_URL`` or ``connect(url)`` skipped the config file, so such a node
ran as a plain (phase "off") node, never registered, and the phase guard could not see it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lockapi_migration.backend import MigrationBackend
from lockapi_migration.fleet import PhaseConflict, live_nodes

import lockapi
from lockapi import ConfigError
from tests.migration.conftest import Fleet


@pytest.fixture
def config_file(fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "lockapi.toml"
    path.write_text(f'[lockapi]\nurl = "{fleet.h_url}"\n[lockapi.migration]\ntarget = "{fleet.r_url}"\n'
                    f'phase = "dual"\nrecord = "{fleet.record}"\n')
    for key in ("LOCKAPI_URL", "LOCKAPI_MIGRATION_TARGET", "LOCKAPI_MIGRATION_PHASE", "LOCKAPI_MIGRATION_RECORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCKAPI_CONFIG", str(path))
    return path


@pytest.mark.parametrize("source", ["$LOCKAPI_URL", "connect(url)"])
def test_the_migration_table_applies_to_a_url_from_elsewhere(fleet: Fleet, config_file: Path, source: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if source == "$LOCKAPI_URL":
        monkeypatch.setenv("LOCKAPI_URL", fleet.h_url)
    with lockapi.connect(fleet.h_url if source == "connect(url)" else None) as mgr:
        assert isinstance(mgr.backend, MigrationBackend) and mgr.backend.phase.value == "dual"
        store = fleet.store()
        try:
            assert [n.phase for n in live_nodes(store)] == ["dual"]  # registered: the guard sees it
        finally:
            store.close()
        with pytest.raises(PhaseConflict, match=r"\(dual\)"):
            fleet.node("off")  # ...and refuses a node two phases away


@pytest.mark.parametrize("source", ["$LOCKAPI_URL", "connect(url)"])
def test_a_different_url_next_to_a_migration_table_refuses_naming_the_conflict(
        fleet: Fleet, config_file: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    other = "memory://somewhere-else"
    if source == "$LOCKAPI_URL":
        monkeypatch.setenv("LOCKAPI_URL", other)
    with pytest.raises(ConfigError) as refused:
        lockapi.connect(other if source == "connect(url)" else None)
    message = str(refused.value)
    assert str(config_file) in message and fleet.h_url in message and other in message and source in message


def test_the_target_url_with_migration_settings_refuses(fleet: Fleet, config_file: Path) -> None:
    config_file.write_text(f'[lockapi.migration]\ntarget = "{fleet.r_url}"\nrecord = "{fleet.record}"\n'
                           f'[lockapi]\nurl = "{fleet.r_url}"\n')
    with pytest.raises(ConfigError, match="the migration's target"):
        lockapi.connect()


def test_environment_migration_settings_apply_to_any_url(fleet: Fleet, config_file: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config_file.write_text('[lockapi]\nurl = "memory://unrelated"\n')
    monkeypatch.setenv("LOCKAPI_MIGRATION_TARGET", fleet.r_url)
    monkeypatch.setenv("LOCKAPI_MIGRATION_PHASE", "shadow")
    monkeypatch.setenv("LOCKAPI_MIGRATION_RECORD", fleet.record)
    with lockapi.connect(fleet.h_url) as mgr:
        assert isinstance(mgr.backend, MigrationBackend) and mgr.backend.phase.value == "shadow"
