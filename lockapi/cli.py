"""The ``lockapi`` command line (docs/cli.md).

Exit codes, the same for every subcommand, plugins' included (a subcommand raises lockapi's errors and
:func:`main` maps them): 0 done; 1 the command ran and the answer is "no" (a check failed, a gate is not
safe); 2 bad usage or configuration (wrong URL, option, password or missing database); 3 the backend
is unavailable; 4 ``inspect``: the lock is free. ``lockapi run`` passes its command's code through
(its own codes are in docs/scheduled-jobs.md).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from typing import Any

import lockapi
from lockapi.aio.plugins import async_backend_class
from lockapi.errors import BackendUnavailable, ConfigError, LockError
from lockapi.observability.cli import register as register_serve_metrics
from lockapi.plugins import backend_class, command_plugins, installed_schemes
from lockapi.run import register as register_run

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_FREE = 0, 1, 2, 3, 4


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default, unless its text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (action.default not in (None, False, argparse.SUPPRESS) and "default" not in text
                and action.option_strings):
            text = f"{text} (default: {action.default})" if text else f"(default: {action.default})"
        return text


class Parser(argparse.ArgumentParser):
    """The parser of ``lockapi`` and of every subcommand (plugins' included): defaults in the help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

BUILTIN_COMMANDS = [register_run, register_serve_metrics]
"""``register(subparsers)`` functions of core subcommands that live in their own modules."""


def _backends(args: argparse.Namespace) -> int:
    for scheme in installed_schemes():
        try:
            cls = backend_class(scheme)
            native_async = async_backend_class(scheme) is not None
        except ConfigError as exc:
            print(f"{scheme:16} not loadable: {exc}")
            continue
        caps = ", ".join(sorted(c.value for c in cls.capabilities)) or "-"
        print(f"{scheme:16} {cls.__module__}.{cls.__qualname__}  [{caps}]")
        notes = [cls.description] if cls.description else []
        if cls.capabilities_vary:
            notes.append(f"per URL: {cls.capabilities_vary} (`lockapi check URL` shows them)")
        notes.append("asyncio: native" if native_async else "asyncio: sync driver on a bounded thread pool")
        for note in notes:
            print(f"{'':16} {note}")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    with lockapi.connect(args.url) as mgr:
        name = f"lockapi:check:{secrets.token_hex(8)}"
        started = time.perf_counter()
        lease = mgr.acquire(name, ttl=10, wait=0)
        acquired = time.perf_counter()
        released = lease.release()
        done = time.perf_counter()
        print(f"{mgr.url}: acquire {1000 * (acquired - started):.2f} ms, "
              f"release {1000 * (done - acquired):.2f} ms, token {lease.token}")
        print("capabilities: " + (", ".join(sorted(c.value for c in mgr.capabilities)) or "-"))
        return EXIT_OK if released else EXIT_FAILED


def _inspect(args: argparse.Namespace) -> int:
    with lockapi.connect(args.url) as mgr:
        info = mgr.inspect(args.name)
    if args.json:
        held = None if info is None else {"holder": info.holder, "token": info.token,
                                          "ttl_remaining": round(info.ttl_remaining, 3)}
        print(json.dumps({"name": args.name, "held": info is not None, "lease": held}))
    elif info is None:
        print(f"{args.name!r} is free")
    else:
        print(f"{args.name!r} held by {info.holder}, token {info.token}, {info.ttl_remaining:.3f} s left")
    return EXIT_OK if info is not None else EXIT_FREE


def _demo(args: argparse.Namespace) -> int:
    from lockapi.demo import DemoSettings, run

    for option in ("workers", "elements", "concurrency"):
        if getattr(args, option) < 1:
            raise ConfigError(f"--{option} must be at least 1")
    settings = DemoSettings(args.url, workers=args.workers, elements=args.elements,
                            concurrency=args.concurrency, call_ms=args.call_ms)
    return EXIT_OK if run(settings).ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lockapi", description="Backend-neutral distributed locks (docs/cli.md).")
    parser.add_argument("--version", action="version", version=f"lockapi {lockapi.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    url_help = "backend URL (default: $LOCKAPI_URL, lockapi.toml, or the embedded SQLite file)"

    p = sub.add_parser("backends", help="list installed backend plugins and their capabilities")
    p.set_defaults(func=_backends)
    p = sub.add_parser("check", help="connect, take and release a probe lock, print latency")
    p.add_argument("url", nargs="?", help=url_help)
    p.set_defaults(func=_check)
    p = sub.add_parser("inspect", help="show who holds a lock (exit 0: held, 4: free)")
    p.add_argument("name", help="the lock name")
    p.add_argument("--url", help=url_help)
    p.add_argument("--json", action="store_true", help="print one JSON object: name, held, lease")
    p.set_defaults(func=_inspect)
    p = sub.add_parser("demo", help="run the invoice demo: workers, exactly-once, a concurrency limit")
    p.add_argument("--url", help=url_help)
    p.add_argument("--workers", type=int, default=4, help="worker processes (the demo's nodes)")
    p.add_argument("--elements", type=int, default=1000, help="invoices to issue")
    p.add_argument("--concurrency", type=int, default=3, help="K: the service's concurrent-call limit")
    p.add_argument("--call-ms", type=float, default=2.0, help="milliseconds one service call takes")
    p.set_defaults(func=_demo)
    for register in (*BUILTIN_COMMANDS, *command_plugins()):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except ConfigError as exc:
        print(f"lockapi: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BackendUnavailable as exc:
        print(f"lockapi: backend unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except LockError as exc:
        print(f"lockapi: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # the reader went away (``lockapi backends | head -1``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())
