"""Where the backend URL, its options and the migration settings come from.

The URL (and its options): ``connect(url=...)``; else ``$LOCKAPI_URL``; else the TOML file named by
``$LOCKAPI_CONFIG``; else ``./lockapi.toml``; else the embedded default, a SQLite file in the working
directory. The ``[lockapi]`` options of a file apply only when the file also gave the URL.

The migration settings apply WHATEVER the URL's source: the ``[lockapi.migration]`` table of the config
file (the one named by ``$LOCKAPI_CONFIG``, else ``./lockapi.toml``, read even when the URL came from
elsewhere), each key overridden by ``$LOCKAPI_MIGRATION_<KEY>``. A node that silently ran without them
would hold only one backend while its peers hold both, so a conflict refuses to start instead: a URL
from ``connect(url)`` or ``$LOCKAPI_URL`` that differs from the file's ``[lockapi] url`` next to its
migration table, or a URL equal to the migration's target.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockapi.errors import ConfigError
from lockapi.spi import redact_url

DEFAULT_URL = "sqlite:///lockapi.sqlite3"


@dataclass
class Settings:
    url: str
    options: dict[str, Any]
    source: str
    """Where ``url`` came from (argument, $LOCKAPI_URL, a file path, or default)."""
    migration: dict[str, Any] = field(default_factory=dict)
    """The ``[lockapi.migration]`` table merged with ``$LOCKAPI_MIGRATION_*``; empty when not migrating.
    Its keys are checked by the migration backend (which knows them), not here."""


def load_file(path: Path) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Read a lockapi.toml: ([lockapi].url, the other [lockapi] keys, [lockapi.migration])."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (named by LOCKAPI_CONFIG?)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    table = data.get("lockapi")
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path} has no [lockapi] table (it needs at least url = \"...\")")
    table = dict(table)
    migration = table.pop("migration", {})
    if not isinstance(migration, dict):
        raise ConfigError(f"{path}: [lockapi.migration] must be a table")
    url = table.pop("url", None)
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"{path}: [lockapi] url must be a string")
    return url, table, migration


def resolve(url: str | None = None, options: dict[str, Any] | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Settings:
    """Work out the URL, options and migration settings exactly as :func:`lockapi.connect` does, without
    any I/O beyond reading the config file. Public as ``lockapi.resolve_config``."""
    options = options or {}
    env = dict(os.environ) if env is None else env
    named = env.get("LOCKAPI_CONFIG")
    path = Path(named) if named else (cwd or Path.cwd()) / "lockapi.toml"
    file_url, file_options, file_migration = load_file(path) if named or path.is_file() else (None, {}, {})
    if url is not None:
        settings = Settings(url, dict(options), "argument")
    elif env.get("LOCKAPI_URL"):
        settings = Settings(env["LOCKAPI_URL"], dict(options), "$LOCKAPI_URL")
    elif named or path.is_file():
        if file_url is None:
            raise ConfigError(f"{path}: [lockapi] needs url = \"scheme://...\"")
        settings = Settings(file_url, {**file_options, **options}, str(path))
    else:
        settings = Settings(DEFAULT_URL, dict(options), "default")
    migration = {**file_migration, **{k[len("LOCKAPI_MIGRATION_"):].lower(): v for k, v in env.items()
                                      if k.startswith("LOCKAPI_MIGRATION_")}}
    if migration:
        _check_migration(settings, migration, path if file_migration else None, file_url)
    settings.migration = migration
    return settings


def backend_target(settings: Settings) -> tuple[str, dict[str, Any], str]:
    """(URL, options, URL as shown to people) to open for ``settings``: the ``migration://`` backend
    around the configured one when a migration is configured, else the configured backend itself."""
    if settings.migration:
        options = {"source": settings.url, "source_options": settings.options, **settings.migration}
        if "timeout" in settings.options:  # bounds the migration's calls, whichever backend they reach
            options.setdefault("timeout", settings.options["timeout"])
        target = redact_url(str(settings.migration["target"]))
        return "migration://", options, f"migration({redact_url(settings.url)} -> {target})"
    return settings.url, settings.options, redact_url(settings.url)


def _check_migration(settings: Settings, migration: dict[str, Any], table: Path | None,
                     file_url: str | None) -> None:
    """Refuse migration settings that cannot apply to ``settings.url`` (see the module docstring)."""
    target = migration.get("target")
    if not target:
        raise ConfigError("migration settings need target = \"scheme://...\" (the backend to move to)")
    if table is not None and file_url is not None and settings.url != file_url:
        raise ConfigError(
            f"{table} has a [lockapi.migration] table for url {redact_url(file_url)}, but this connection's "
            f"URL comes from {_shown(settings.source)}: {redact_url(settings.url)}. A node must not run outside the "
            "migration: use the file's url, or name another config file in $LOCKAPI_CONFIG")
    if str(target) == settings.url:
        raise ConfigError(
            f"the URL from {_shown(settings.source)} is the migration's target ({redact_url(settings.url)}): connect "
            "with the source URL (the migration opens the target itself), or end the migration (docs/migration.md)")


def _shown(source: str) -> str:
    return "connect(url)" if source == "argument" else source
