"""``lockapi migrate``: report, check, status and backfill, for the fleet named by the configuration.

Registered through the ``lockapi.commands`` entry point: ``register(subparsers)`` adds the ``migrate``
command. Exit codes, the same for every subcommand (the core CLI maps lockapi's errors):

* 0: done; for ``check``, safe to advance one phase;
* 1: ``check`` (or ``report --check``) found a reason not to advance (each reason is printed);
* 2: configuration error (no record store configured, a bad flag, no way to know the phase);
* 3: the record store (or a backend) is unavailable.

The record store, source and target come from the same configuration the application uses
(lockapi.toml / ``$LOCKAPI_*``) unless given as options. URLs are only ever printed redacted.
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
from lockapi_migration.records.store import LagSample, RecordStore, open_record_store
from lockapi_migration.replay.lag import alarming
from lockapi_migration.tooling.backfill import backfill
from lockapi_migration.tooling.check import DEFAULTS, Thresholds, milestones_of, readiness
from lockapi_migration.tooling.classify import NOISE_WINDOW
from lockapi_migration.tooling.html import render_html
from lockapi_migration.tooling.report import Readiness, render_text, summarize, verdict_lines

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


def _configured_phase() -> str | None:
    """The phase in [lockapi.migration] / $LOCKAPI_MIGRATION_PHASE, if the configuration can be read."""
    try:
        phase = _settings()[2].get("phase")
    except ConfigError:
        return None
    return None if phase is None else str(phase)


def _limits(args: argparse.Namespace) -> Thresholds:
    return Thresholds(args.max_false_grants, args.max_false_deny_rate, args.min_decisions, args.max_error_rate,
                      args.max_lag, args.max_stale_rate, args.done_ttl)


def _readiness(args: argparse.Namespace, store: RecordStore) -> Readiness:
    return readiness(store, phase=args.phase, configured=_configured_phase(), since=args.since,
                     limits=_limits(args), window=args.noise_window)


def cmd_report(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        try:
            ready = _readiness(args, store)
        except ConfigError as exc:  # the report still shows everything else
            ready = Readiness(None, None, [str(exc)], "nowhere")
        summary = summarize(store.records(args.since), since=args.since,
                            nodes=live_nodes(store, live_after=LIVE_AFTER), milestones=milestones_of(store),
                            window=args.noise_window, max_lag=args.max_lag, lag=store.lag(args.since))
    finally:
        store.close()
    summary.readiness = ready
    print(render_text(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary.to_json(), indent=2, default=str), encoding="utf-8")
        print(f"JSON written to {args.json}")
    if args.html:
        Path(args.html).write_text(render_html(summary, store.redacted_url), encoding="utf-8")
        print(f"HTML written to {args.html}")
    return 1 if args.check and not ready.safe else 0


def cmd_check(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        ready = _readiness(args, store)
    finally:
        store.close()
    for line in verdict_lines(ready):
        print(line)
    return 0 if ready.safe else 1


def cmd_status(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        every = store.nodes()
        live = {n.node for n in live_nodes(store, live_after=LIVE_AFTER)}
        milestones = milestones_of(store)
        recent = store.lag(time.time() - 180)
    finally:
        store.close()
    print(f"record store {store.redacted_url}")
    latest = _latest_lag(recent)
    now = time.time()
    alarms = []
    for node in every:
        state = "live" if node.node in live else "gone"
        sample = latest.get(node.node)
        lag = "replay lag -" if sample is None else (
            f"replay lag p50 {1000 * sample.p50:.1f} ms, p99 {1000 * sample.p99:.1f} ms, max {sample.max:.2f} s, "
            f"backlog {sample.backlog:.2f} s, stale {sample.stale}, dropped {sample.dropped}")
        if sample is not None and node.node in live and alarming(sample):
            alarms.append(node.node)
            lag += "  LAG ALARM"
        print(f"  {node.node:<40} {node.phase:<8} {state}  heartbeat {now - node.heartbeat:5.1f}s ago  {lag}")
    if not every:
        print("  no nodes registered")
    phases = sorted({n.phase for n in every if n.node in live}, key=lambda p: Phase.parse(p).index)
    print(f"fleet phases: {', '.join(phases) or 'none'}")
    if alarms:
        print(f"LAG ALARM: the shadow replay of {', '.join(alarms)} fell behind its max_lag in the last minutes: "
              "its decisions are recorded stale, not compared (see `lockapi migrate report`)")
    for key, value in milestones.items():
        print(f"{key}: {'never' if value is None else time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(value))}")
    return 0


def _latest_lag(samples: list[LagSample]) -> dict[str, LagSample]:
    """Each node's newest minute, its samples combined (the node and its replay worker both publish)."""
    newest: dict[str, list[LagSample]] = {}
    for sample in samples:  # oldest first
        group = newest.setdefault(sample.node, [])
        if group and group[0].minute != sample.minute:
            group.clear()
        group.append(sample)
    return {node: LagSample(node, group[0].minute, sum(s.count for s in group), max(s.p50 for s in group),
                            max(s.p99 for s in group), max(s.max for s in group), sum(s.stale for s in group),
                            sum(s.dropped for s in group), max(s.backlog for s in group),
                            min(s.max_lag for s in group))
            for node, group in newest.items()}


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


def _gate_flags(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    parser.add_argument("--phase", choices=[p.value for p in Phase],
                        help="the phase to judge (default: the live nodes' phase from the registry, else the "
                             "configured phase)")
    parser.add_argument("--max-false-grants", type=int, default=d.max_false_grants, metavar="N",
                        help=f"false grants (H denied, R granted) allowed (default {d.max_false_grants})")
    parser.add_argument("--max-false-deny-rate", type=float, default=d.max_false_deny_rate, metavar="RATE",
                        help=f"false denies over compared acquires allowed (default {d.max_false_deny_rate:g})")
    parser.add_argument("--min-decisions", type=int, default=d.min_decisions, metavar="N",
                        help=f"compared decisions of the phase needed (default {d.min_decisions})")
    parser.add_argument("--max-error-rate", type=float, default=d.max_error_rate, metavar="RATE",
                        help=f"errors, timeouts and drops over all records allowed (default {d.max_error_rate:g})")
    parser.add_argument("--max-lag", type=float, default=d.max_lag, metavar="SECONDS",
                        help=f"largest per-minute p99 replay lag allowed; records whose replay ran later are "
                             f"stale, not compared (default {d.max_lag:g})")
    parser.add_argument("--max-stale-rate", type=float, default=d.max_stale_rate, metavar="RATE",
                        help=f"stale replays over all replays allowed (default {d.max_stale_rate:g})")
    parser.add_argument("--done-ttl", type=float, metavar="SECONDS",
                        help="your longest Job.done_ttl: once that long has passed since shadow began, it "
                             "replaces the backfill (default: the backfill is required)")


def register(subparsers: Any) -> None:
    """Add ``migrate`` and its subcommands to the core CLI's subparsers."""
    migrate = subparsers.add_parser(
        "migrate", help="move locks between backends without downtime",
        description="Report on, gate and complete a migration between two lock backends, for the fleet named "
                    "by the configuration (docs/migration.md). Exit codes: 0 done (check: safe to advance one "
                    "phase), 1 not safe (each reason printed), 2 configuration error, 3 unavailable.")
    commands = migrate.add_subparsers(dest="migrate_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--record", metavar="URL",
                            help="record store URL (default: record in [lockapi.migration] or "
                                 "$LOCKAPI_MIGRATION_RECORD)")

    def reading(parser: argparse.ArgumentParser) -> None:
        common(parser)
        parser.add_argument("--since", type=parse_since, metavar="T",
                            help="only records since T: epoch seconds, ISO time, or 30m/2h/1d back (default: all; "
                                 "the gate: since the fleet entered its phase)")
        parser.add_argument("--noise-window", type=float, default=NOISE_WINDOW, metavar="SECONDS",
                            help=f"seconds around a hand-off counted as timing noise (default {NOISE_WINDOW})")
        _gate_flags(parser)

    report = commands.add_parser("report", help="summarise the fleet's decision records, the gate's verdict first")
    reading(report)
    report.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page to FILE")
    report.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE")
    report.add_argument("--check", action="store_true", help="exit 1 when the gate says not safe (like check)")
    report.set_defaults(func=cmd_report)

    check = commands.add_parser(
        "check", help="exit 0 only if it is safe to advance one phase (works with no flags: safe defaults)",
        description="The readiness gate (docs/migration.md). Every flag has a safe default.")
    reading(check)
    check.set_defaults(func=cmd_check)

    status = commands.add_parser("status", help="live nodes, their phases and replay lag, milestones")
    common(status)
    status.set_defaults(func=cmd_status)

    fill = commands.add_parser("backfill", help="copy live done markers (and fencing counters) from H to R")
    common(fill)
    fill.add_argument("--source", metavar="URL", help="H's URL (default: [lockapi] url)")
    fill.add_argument("--target", metavar="URL", help="R's URL (default: target in [lockapi.migration])")
    fill.add_argument("--no-fences", action="store_true", help="copy markers only, leave R's fencing counters")
    fill.set_defaults(func=cmd_backfill)
