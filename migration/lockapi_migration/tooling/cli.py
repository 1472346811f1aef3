"""``lockapi migrate``: report, check, status and backfill, for the fleet named by the configuration.

Registered through the ``lockapi.commands`` entry point: ``register(subparsers)`` adds the ``migrate``
command; every subcommand's ``func(args)`` returns the process exit code (0: done / safe to advance,
1: ``check`` found a reason not to advance); lockapi errors propagate to the core CLI, which maps them
to its exit codes. The record store, source and
target come from the same configuration the application uses (lockapi.toml / ``$LOCKAPI_*``) unless
given as options. URLs are only ever printed redacted.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import lockapi
from lockapi import open_backend
from lockapi.spi import ConfigError, redact_url
from lockapi_migration.fleet import LIVE_AFTER, live_nodes
from lockapi_migration.phases import Phase
from lockapi_migration.records.store import BACKFILL_DONE, SHADOW_STARTED, RecordStore, open_record_store
from lockapi_migration.tooling.backfill import backfill
from lockapi_migration.tooling.check import Thresholds, evaluate, fleet_phase, phase_start
from lockapi_migration.tooling.classify import NOISE_WINDOW
from lockapi_migration.tooling.html import render_html
from lockapi_migration.tooling.report import Summary, render_text, summarize

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """``--since``: epoch seconds, an ISO date/time, or a span back from now (``90s``, ``30m``, ``2h``, ``1d``)."""
    match = _RELATIVE.match(text.strip())
    if match:
        return time.time() - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since {text!r}: use epoch seconds, ISO time, or 30m/2h/1d") from None


def _settings() -> tuple[str, dict[str, Any], dict[str, Any]]:
    settings = lockapi.resolve_config()
    return settings.url, settings.options, settings.migration


def _store(args: argparse.Namespace) -> RecordStore:
    url = args.record or _settings()[2].get("record")
    if not url:
        raise ConfigError("no record store: set record in [lockapi.migration] (or $LOCKAPI_MIGRATION_RECORD), "
                          "or pass --record URL")
    return open_record_store(str(url))


def _milestones(store: RecordStore) -> dict[str, float | None]:
    return {key: store.milestone(key) for key in (SHADOW_STARTED, BACKFILL_DONE)}


def _summary(store: RecordStore, since: float | None, window: float) -> Summary:
    return summarize(store.records(since), since=since, nodes=live_nodes(store, live_after=LIVE_AFTER),
                     milestones=_milestones(store), window=window)


def cmd_report(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        summary = _summary(store, args.since, args.noise_window)
    finally:
        store.close()
    print(render_text(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary.to_json(), indent=2, default=str), encoding="utf-8")
        print(f"JSON written to {args.json}")
    if args.html:
        Path(args.html).write_text(render_html(summary, store.redacted_url), encoding="utf-8")
        print(f"HTML written to {args.html}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        nodes = live_nodes(store, live_after=LIVE_AFTER)
        phase, reasons = (Phase.parse(args.phase), []) if args.phase else fleet_phase(nodes)
        if phase is not None:
            since = args.since if args.since is not None else phase_start(nodes, phase)
            summary = _summary(store, since, args.noise_window)
            limits = Thresholds(args.max_false_grants, args.max_false_deny_rate, args.min_decisions,
                                args.max_error_rate, args.done_ttl)
            reasons = evaluate(phase, summary, _milestones(store), limits)
    finally:
        store.close()
    if reasons:
        print(f"NOT safe to advance{f' from {phase.value}' if phase else ''}:")
        for reason in reasons:
            print(f"  - {reason}")
        return 1
    assert phase is not None
    nxt = phase.next()
    print(f"safe to advance from {phase.value} to {nxt.value if nxt else '-'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        every = store.nodes()
        live = {n.node for n in live_nodes(store, live_after=LIVE_AFTER)}
        milestones = _milestones(store)
    finally:
        store.close()
    print(f"record store {store.redacted_url}")
    now = time.time()
    for node in every:
        state = "live" if node.node in live else "gone"
        print(f"  {node.node:<40} {node.phase:<8} {state}  heartbeat {now - node.heartbeat:5.1f}s ago")
    if not every:
        print("  no nodes registered")
    phases = sorted({n.phase for n in every if n.node in live}, key=lambda p: Phase.parse(p).index)
    print(f"fleet phases: {', '.join(phases) or 'none'}")
    for key, value in milestones.items():
        print(f"{key}: {'never' if value is None else time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(value))}")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    source_url, source_options, migration = _settings()
    source_url = args.source or source_url
    target_url = args.target or migration.get("target")
    if not target_url:
        raise ConfigError("no target: set target in [lockapi.migration] or pass --target URL")
    store = _store(args)
    source = open_backend(source_url, {} if args.source else source_options)
    target = open_backend(str(target_url))
    try:
        result = backfill(source, target, store, fences=not args.no_fences)
    finally:
        for closeable in (source, target, store):
            closeable.close()
    print(f"backfill {redact_url(source_url)} -> {redact_url(str(target_url))}: {result.markers} done markers "
          f"copied, {result.fences} fencing counters moved, {result.busy} counters not probed (held)")
    return 0


def register(subparsers: Any) -> None:
    """Add ``migrate`` and its subcommands to the core CLI's subparsers."""
    migrate = subparsers.add_parser("migrate", help="move locks between backends without downtime",
                                    description=__doc__)
    commands = migrate.add_subparsers(dest="migrate_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--record", help="record store URL (default: record in the configuration)")

    def reading(parser: argparse.ArgumentParser) -> None:
        common(parser)
        parser.add_argument("--since", type=parse_since, help="only records since T (epoch, ISO, or 30m/2h)")
        parser.add_argument("--noise-window", type=float, default=NOISE_WINDOW,
                            help=f"seconds around a hand-off counted as timing noise (default {NOISE_WINDOW})")

    report = commands.add_parser("report", help="summarise the fleet's decision records")
    reading(report)
    report.add_argument("--html", help="write a self-contained HTML page to FILE")
    report.add_argument("--json", help="write the summary as JSON to FILE")
    report.set_defaults(func=cmd_report)

    check = commands.add_parser("check", help="exit 0 only if it is safe to advance one phase")
    reading(check)
    check.add_argument("--max-false-grants", type=int, required=True)
    check.add_argument("--max-false-deny-rate", type=float, required=True)
    check.add_argument("--min-decisions", type=int, required=True)
    check.add_argument("--max-error-rate", type=float, default=0.01)
    check.add_argument("--done-ttl", type=float, help="longest Job.done_ttl (s): waiting it out replaces backfill")
    check.add_argument("--phase", choices=[p.value for p in Phase],
                       help="the fleet's phase (default: read from the registry)")
    check.set_defaults(func=cmd_check)

    status = commands.add_parser("status", help="live nodes and their phases")
    common(status)
    status.set_defaults(func=cmd_status)

    fill = commands.add_parser("backfill", help="copy live done markers (and fencing counters) from H to R")
    common(fill)
    fill.add_argument("--source", help="H's URL (default: [lockapi] url)")
    fill.add_argument("--target", help="R's URL (default: target in [lockapi.migration])")
    fill.add_argument("--no-fences", action="store_true", help="copy markers only")
    fill.set_defaults(func=cmd_backfill)

