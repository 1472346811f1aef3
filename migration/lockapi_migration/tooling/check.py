"""The gate before advancing one phase: ``lockapi migrate check`` passes only when every rule holds.

The gate judges the fleet's phase ``p`` (read from the registry: every live node must be in one phase;
``--phase`` overrides; with no live node, the configured phase) on the records OF THAT PHASE only (a
record carries the phase its node was in), since the fleet entered it (or ``--since``):

* ``p`` in shadow/dual/cutover: at least ``min_decisions`` compared decisions; at most
  ``max_false_grants`` false grants; false-deny rate and error rate within bounds; the shadow replay
  kept up (per-minute p99 lag at most ``max_lag``, at most ``max_stale_rate`` of replays stale);
* ``p`` in dual or cutover (advancing to cutover or done, where reads stop needing H): the done
  markers have moved - ``migrate backfill`` completed after shadow began, or ``done_ttl`` seconds have
  passed since shadow began (every marker written only to H has expired) - and no marker mismatch was
  recorded after the backfill;
* ``p`` done: nothing left to advance to. A fleet spanning two phases is mid-rollout and never passes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from lockapi.spi import ConfigError
from lockapi_migration.fleet import LIVE_AFTER, live_nodes
from lockapi_migration.phases import Phase
from lockapi_migration.records.store import BACKFILL_DONE, SHADOW_STARTED, NodeInfo, RecordStore
from lockapi_migration.replay.lag import MAX_LAG
from lockapi_migration.tooling.classify import NOISE_WINDOW
from lockapi_migration.tooling.report import Readiness, Summary, summarize

COMPARED = (Phase.SHADOW, Phase.DUAL, Phase.CUTOVER)


@dataclass(frozen=True)
class Thresholds:
    """The gate's bounds; the defaults are the documented safe ones (docs/migration.md)."""

    max_false_grants: int = 0
    max_false_deny_rate: float = 0.001
    min_decisions: int = 1000
    max_error_rate: float = 0.01
    max_lag: float = MAX_LAG
    """Seconds: the largest per-minute p99 replay lag allowed (a lagging shadow compares stale decisions)."""
    max_stale_rate: float = 0.01
    done_ttl: float | None = None
    """The longest ``Job.done_ttl`` in use, in seconds (an alternative to running backfill)."""


DEFAULTS = Thresholds()


def fleet_phase(nodes: Sequence[NodeInfo]) -> tuple[Phase | None, list[str]]:
    """The one phase every live node is in, or None and the reasons why there is none."""
    phases = {Phase.parse(n.phase) for n in nodes}
    if not nodes:
        return None, ["no live nodes in the registry"]
    if len(phases) > 1:
        spread = ", ".join(f"{n.node}={n.phase}" for n in nodes)
        return None, [f"the fleet is mid-rollout across phases ({spread}): finish moving every node first"]
    return phases.pop(), []


def phase_start(nodes: Sequence[NodeInfo], phase: Phase) -> float | None:
    """When the fleet entered ``phase``, as far as the registry knows (the earliest start among its nodes)."""
    starts = [n.started for n in nodes if n.phase == phase.value]
    return min(starts) if starts else None


def evaluate(phase: Phase, summary: Summary, milestones: dict[str, float | None], limits: Thresholds = DEFAULTS,
             *, now: float | None = None) -> list[str]:
    """Why the fleet in ``phase`` must not advance yet (``summary``: that phase's records); empty: it may."""
    now = time.time() if now is None else now
    if phase.next() is None:
        return ["the migration is done: there is no later phase"]
    reasons: list[str] = []
    if phase in COMPARED:
        if summary.decisions < limits.min_decisions:
            reasons.append(f"only {summary.decisions} compared decisions in {phase.value}, need at least "
                           f"{limits.min_decisions} (--min-decisions): let the fleet run longer in this phase")
        if summary.false_grants > limits.max_false_grants:
            reasons.append(f"{summary.false_grants} false grants (R granted what H denied), allowed "
                           f"{limits.max_false_grants}: see the report's false_grant examples")
        if summary.false_deny_rate > limits.max_false_deny_rate:
            reasons.append(f"false-deny rate {summary.false_deny_rate:.3%} exceeds {limits.max_false_deny_rate:.3%} "
                           "(--max-false-deny-rate)")
        if summary.error_rate > limits.max_error_rate:
            reasons.append(f"error rate {summary.error_rate:.3%} exceeds {limits.max_error_rate:.3%}: "
                           "see the report's errors")
        reasons += _lag(summary, limits)
    if phase in (Phase.DUAL, Phase.CUTOVER):
        reasons += _markers_moved(milestones, limits.done_ttl, now)
        if summary.marker_mismatches_after_backfill:
            reasons.append(f"{summary.marker_mismatches_after_backfill} marker mismatches after the backfill: a done "
                           "marker reached one backend only; rerun `lockapi migrate backfill` and see the examples")
    return reasons


def _lag(summary: Summary, limits: Thresholds) -> list[str]:
    reasons = []
    record_p99 = summary.shadow_delay_ms["p99"]
    worst = max([m.p99 for m in summary.lag] + ([] if math.isnan(record_p99) else [record_p99 / 1000]), default=0.0)
    if worst > limits.max_lag:
        reasons.append(f"the shadow replay lagged {worst:.2f} s (p99) behind the application, more than --max-lag "
                       f"{limits.max_lag:g} s: its decisions are stale; make the shadow faster or shed less load")
    if summary.stale_rate > limits.max_stale_rate:
        reasons.append(f"{summary.stale} replays ({summary.stale_rate:.2%}) were stale, not compared, more than "
                       f"{limits.max_stale_rate:.2%}")
    return reasons


def _markers_moved(milestones: dict[str, float | None], done_ttl: float | None, now: float) -> list[str]:
    shadow = milestones.get(SHADOW_STARTED)
    backfill = milestones.get(BACKFILL_DONE)
    if shadow is None:
        return ["no node ever ran in shadow: done markers were never written to R"]
    if backfill is not None and backfill >= shadow:
        return []
    if done_ttl is not None and now - shadow >= done_ttl:
        return []
    waited = f"; done_ttl {done_ttl:.0f}s has not passed since shadow began" if done_ttl is not None else ""
    return [f"done markers may exist only on H: run `lockapi migrate backfill` (never completed after shadow "
            f"began){waited}"]


def milestones_of(store: RecordStore) -> dict[str, float | None]:
    return {key: store.milestone(key) for key in (SHADOW_STARTED, BACKFILL_DONE)}


def readiness(store: RecordStore, *, phase: str | None = None, configured: str | None = None,
              since: float | None = None, limits: Thresholds = DEFAULTS,
              window: float = NOISE_WINDOW) -> Readiness:
    """The gate's verdict for the fleet on ``store``: the phase from ``phase`` (``--phase``), else the
    registry, else ``configured``; judged on that phase's records since it began (or ``since``).

    :class:`ConfigError` when no phase can be known (no flag, no live node, nothing configured)."""
    nodes = live_nodes(store, live_after=LIVE_AFTER)
    if phase is not None:
        current, source = Phase.parse(phase), "--phase"
    else:
        found, why = fleet_phase(nodes)
        if found is None and nodes:
            return Readiness(None, None, why, "the registry")
        if found is not None:
            current, source = found, "the registry"
        elif configured is not None:
            current, source = Phase.parse(configured), "the configuration (no live nodes in the registry)"
        else:
            raise ConfigError("no live nodes in the registry and no phase in the configuration: pass --phase "
                              "(the phase the fleet was in) or set phase in [lockapi.migration]")
    start = since if since is not None else phase_start(nodes, current)
    records = [r for r in store.records(start) if r.phase == current.value]
    nodes_in_phase = {r.node for r in records}
    lag = [s for s in store.lag(start) if s.node in nodes_in_phase]
    milestones = milestones_of(store)
    summary = summarize(records, since=start, milestones=milestones, window=window, max_lag=limits.max_lag,
                        lag=lag)
    nxt = current.next()
    return Readiness(current.value, nxt.value if nxt else None, evaluate(current, summary, milestones, limits),
                     source, summary.decisions)
