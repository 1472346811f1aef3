"""``lockapi sql init URL`` (create the tables) and ``lockapi sql ddl URL`` (print them for a DBA).

Registered in the entry-point group ``lockapi.commands``; lockapi's CLI calls :func:`register` with its
subparsers. Options for the backend (``table_prefix``, ...) go in the URL's query string or in
``--table-prefix``. Exit codes: 0 done, 1 database unreachable, 2 bad URL or option.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import parse_qsl

from lockapi.errors import BackendUnavailable, ConfigError
from lockapi.spi import DEFAULT_TIMEOUT, BackendConfig, Options
from lockapi_sql.backend import SQLBackend


def register(subparsers: Any) -> None:
    """Add the ``sql`` command and its ``init`` and ``ddl`` subcommands."""
    sql = subparsers.add_parser("sql", help="SQL backend: create or print its tables")
    commands = sql.add_subparsers(dest="sql_command", required=True, metavar="SUBCOMMAND")
    init = commands.add_parser("init", help="create the lock tables in the database at URL")
    ddl = commands.add_parser("ddl", help="print the CREATE TABLE statements for URL's database (no connection)")
    for parser, func in ((init, _init), (ddl, _ddl)):
        parser.add_argument("url", metavar="URL", help="e.g. postgresql://user@host/db, sqlite:///locks.db")
        parser.add_argument("--table-prefix", help="table name prefix (default lockapi_)")
        parser.add_argument("--timeout", type=float, default=None, help="seconds per database operation")
        parser.set_defaults(func=func)


def _backend(args: argparse.Namespace) -> SQLBackend:
    """The backend for ``args.url``, its query string and flags as options. Connects to nothing yet."""
    base, _, query = args.url.partition("?")
    options: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if args.table_prefix is not None:
        options["table_prefix"] = args.table_prefix
    opts = Options(options, source="option")
    timeout = args.timeout if args.timeout is not None else opts.float("timeout", DEFAULT_TIMEOUT)
    scheme = base.split("://", 1)[0].split("+", 1)[0].lower() if "://" in base else ""
    return SQLBackend(BackendConfig(url=base, scheme=scheme, options=opts, timeout=timeout))


def _init(args: argparse.Namespace) -> int:
    try:
        backend = _backend(args)
        try:
            backend.ensure_schema(force=True)
        finally:
            backend.close()
    except ConfigError as exc:
        print(f"lockapi sql init: {exc}", file=sys.stderr)
        return 2
    except BackendUnavailable as exc:
        print(f"lockapi sql init: {exc}", file=sys.stderr)
        return 1
    tables = ", ".join(t.name for t in backend.tables.metadata.sorted_tables)
    print(f"lock tables ready in {backend.config.redacted_url}: {tables}")
    return 0


def _ddl(args: argparse.Namespace) -> int:
    try:
        backend = _backend(args)
    except ConfigError as exc:
        print(f"lockapi sql ddl: {exc}", file=sys.stderr)
        return 2
    try:
        print(backend.tables.ddl(backend.engine.dialect), end="")
    finally:
        backend.close()
    return 0
