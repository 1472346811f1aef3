"""The ``lockapi`` command line. Exit codes: 0 ok, 1 failure, 2 bad usage or configuration,
3 backend unavailable."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Sequence

import lockapi
from lockapi.errors import BackendUnavailable, ConfigError, LockError
from lockapi.observability.cli import register as register_serve_metrics
from lockapi.plugins import backend_class, command_plugins, installed_schemes
from lockapi.run import register as register_run

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 1, 2, 3

BUILTIN_COMMANDS = [register_run, register_serve_metrics]
"""``register(subparsers)`` functions of core subcommands that live in their own modules."""


def _backends(args: argparse.Namespace) -> int:
    for scheme in installed_schemes():
        try:
            cls = backend_class(scheme)
        except ConfigError as exc:
            print(f"{scheme:16} not loadable: {exc}")
            continue
        caps = ", ".join(sorted(c.value for c in cls.capabilities)) or "-"
        print(f"{scheme:16} {cls.__module__}.{cls.__qualname__}  [{caps}]")
        if cls.description:
            print(f"{'':16} {cls.description}")
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
    if info is None:
        print(f"{args.name!r} is free")
    else:
        print(f"{args.name!r} held by {info.holder}, token {info.token}, {info.ttl_remaining:.3f} s left")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from lockapi.demo import DemoSettings, run

    for option in ("workers", "elements", "concurrency"):
        if getattr(args, option) < 1:
            raise ConfigError(f"--{option} must be at least 1")
    settings = DemoSettings(args.url, workers=args.workers, elements=args.elements,
                            concurrency=args.concurrency, call_ms=args.call_ms)
    return EXIT_OK if run(settings).ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lockapi", description="Backend-neutral distributed locks.")
    parser.add_argument("--version", action="version", version=f"lockapi {lockapi.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    url_help = "backend URL (default: $LOCKAPI_URL, lockapi.toml, or the embedded SQLite file)"

    p = sub.add_parser("backends", help="list installed backend plugins and their capabilities")
    p.set_defaults(func=_backends)
    p = sub.add_parser("check", help="connect, take and release a probe lock, print latency")
    p.add_argument("url", nargs="?", help=url_help)
    p.set_defaults(func=_check)
    p = sub.add_parser("inspect", help="show who holds a lock")
    p.add_argument("name")
    p.add_argument("--url", help=url_help)
    p.set_defaults(func=_inspect)
    p = sub.add_parser("demo", help="run the invoice demo: workers, exactly-once, a concurrency limit")
    p.add_argument("--url", help=url_help)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--elements", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=3, help="K: the service's concurrent-call limit")
    p.add_argument("--call-ms", type=float, default=2.0, help="duration of one service call")
    p.set_defaults(func=_demo)
    for register in (*BUILTIN_COMMANDS, *command_plugins()):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"lockapi: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BackendUnavailable as exc:
        print(f"lockapi: backend unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except LockError as exc:
        print(f"lockapi: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())
