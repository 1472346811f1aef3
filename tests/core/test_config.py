"""Where the URL and options come from, and how bad configuration is reported (before any I/O)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lockapi
from lockapi.config import DEFAULT_URL, resolve
from lockapi.errors import ConfigError


def test_argument_wins(tmp_path: Path) -> None:
    s = resolve("memory://a", {"timeout": 2}, env={"LOCKAPI_URL": "memory://b"}, cwd=tmp_path)
    assert (s.url, s.options, s.source) == ("memory://a", {"timeout": 2}, "argument")


def test_environment_url(tmp_path: Path) -> None:
    (tmp_path / "lockapi.toml").write_text('[lockapi]\nurl = "memory://file"\n')
    s = resolve(None, {}, env={"LOCKAPI_URL": "memory://env"}, cwd=tmp_path)
    assert (s.url, s.source) == ("memory://env", "$LOCKAPI_URL")


def test_named_config_file_with_options(tmp_path: Path) -> None:
    cfg = tmp_path / "x.toml"
    cfg.write_text('[lockapi]\nurl = "memory://file"\ntimeout = 1.5\n')
    s = resolve(None, {"timeout": 3}, env={"LOCKAPI_CONFIG": str(cfg)}, cwd=tmp_path)
    assert (s.url, s.options) == ("memory://file", {"timeout": 3})
    s = resolve(None, {}, env={"LOCKAPI_CONFIG": str(cfg)}, cwd=tmp_path)
    assert s.options == {"timeout": 1.5}


def test_lockapi_toml_in_working_directory(tmp_path: Path) -> None:
    (tmp_path / "lockapi.toml").write_text('[lockapi]\nurl = "memory://cwd"\n')
    assert resolve(None, {}, env={}, cwd=tmp_path).url == "memory://cwd"


def test_embedded_default(tmp_path: Path) -> None:
    s = resolve(None, {}, env={}, cwd=tmp_path)
    assert (s.url, s.source) == (DEFAULT_URL, "default")
    assert s.url.startswith("sqlite:///") and not s.migration


def test_migration_table_and_environment(tmp_path: Path) -> None:
    (tmp_path / "lockapi.toml").write_text(
        '[lockapi]\nurl = "memory://h"\n[lockapi.migration]\ntarget = "memory://r"\nphase = "shadow"\n'
    )
    s = resolve(None, {}, env={"LOCKAPI_MIGRATION_PHASE": "dual"}, cwd=tmp_path)
    assert s.migration == {"target": "memory://r", "phase": "dual"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not toml [", "cannot read"),
        ('[other]\nurl = "memory://"\n', r"no \[lockapi\] table"),
        ("[lockapi]\ntimeout = 1\n", "needs url"),
        ("[lockapi]\nurl = 5\n", "url must be a string"),
        ('[lockapi]\nurl = "memory://"\n[lockapi.migration]\nphase = "dual"\n', "need target"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "lockapi.toml").write_text(content)
    with pytest.raises(ConfigError, match=message):
        resolve(None, {}, env={}, cwd=tmp_path)


def test_missing_named_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(None, {}, env={"LOCKAPI_CONFIG": str(tmp_path / "nope.toml")}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("no-scheme", "looks like scheme://"),
        ("bogus://host", "installed: .*memory"),
        ("memory://?timeout=0", "timeout"),
        ("memory://?timeout=abc", "timeout"),
        ("memory://?colour=blue", "unknown option 'colour'"),
    ],
)
def test_bad_urls_fail_before_connecting(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        lockapi.connect(url)


def test_scheme_plus_driver_resolves_by_first_part() -> None:
    from lockapi.plugins import parse_url

    assert parse_url("memory+anything://x?timeout=2").plugin == "memory"
    parsed = parse_url("memory://x?timeout=2&a=b")
    assert (parsed.base, parsed.query) == ("memory://x", {"timeout": "2", "a": "b"})


def test_connect_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKAPI_URL", "memory://from-env?timeout=2")
    with lockapi.connect() as mgr:
        assert mgr.url == "memory://from-env?timeout=2"
        assert mgr.backend.config.timeout == 2.0


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://:key@cache.example:6380", "rediss://:***@cache.example:6380"),
        ("postgresql://u@h/db?password=x&sslmode=require", "postgresql://***@h/db?password=***&sslmode=require"),
        ("redis://s3cret@host:6379", "redis://***@host:6379"),
        ("memory://", "memory://"),
    ],
)
def test_urls_are_redacted(url: str, shown: str) -> None:
    assert lockapi.redact_url(url) == shown


def test_unknown_migration_settings_are_reported_by_the_migration_backend(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lockapi.toml").write_text(
        '[lockapi]\nurl = "memory://h"\n[lockapi.migration]\ntarget = "memory://r"\ncolour = "blue"\n'
    )
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("LOCKAPI_")]:
        monkeypatch.delenv(key)
    with pytest.raises(ConfigError, match="colour"):
        lockapi.connect()


@pytest.mark.parametrize("url", ["sqlite:////abs/path/x.db", "sqlite:///rel.db", "sqlite://", "memory://"])
def test_url_base_keeps_the_path_exactly(url: str) -> None:
    from lockapi.plugins import parse_url

    assert parse_url(url + "?timeout=3").base == url


@pytest.mark.parametrize("url", ["://:pw-S3cr3t@127.0.0.1??", "redis://u:pw-S3cr3t@h?a=1??b", "x://pw-S3cr3t@h#frag"])
def test_a_url_no_parser_accepts_is_redacted_all_the_same(url: str) -> None:
    """Found by the reliability suite's hypothesis run: urlsplit saw no netloc, and the password leaked."""
    assert "pw-S3cr3t" not in lockapi.redact_url(url)
