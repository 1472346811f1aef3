"""The gate before advancing one phase: ``lockapi migrate check`` passes only when every rule holds.

Rules, for a fleet whose live nodes are all in phase ``p`` (a fleet still spanning two phases is
mid-rollout and never passes):

* ``p`` in shadow/dual/cutover: at least ``min_decisions`` compared decisions since the fleet entered
  ``p``; at most ``max_false_grants`` false grants; false-deny rate and error rate within bounds;
* ``p`` in dual or cutover (advancing to cutover or done, where reads stop needing H): the done
  markers have moved - ``migrate backfill`` completed after shadow began, or ``done_ttl`` seconds have
  passed since shadow began (every marker written only to H has expired);
* ``p`` done: nothing left to advance to.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from lockapi_migration.phases import Phase
from lockapi_migration.records.store import BACKFILL_DONE, SHADOW_STARTED, NodeInfo
from lockapi_migration.tooling.report import Summary

COMPARED = (Phase.SHADOW, Phase.DUAL, Phase.CUTOVER)


@dataclass(frozen=True)
class Thresholds:
    max_false_grants: int
    max_false_deny_rate: float
    min_decisions: int
    max_error_rate: float = 0.01
    done_ttl: float | None = None
    """The longest ``Job.done_ttl`` in use, in seconds (an alternative to running backfill)."""


def fleet_phase(nodes: Sequence[NodeInfo]) -> tuple[Phase | None, list[str]]:
    """The one phase every live node is in, or None and the reasons why there is none."""
    phases = {Phase.parse(n.phase) for n in nodes}
    if not nodes:
        return None, ["no live nodes in the registry: pass --phase to say which phase the fleet is in"]
    if len(phases) > 1:
        spread = ", ".join(f"{n.node}={n.phase}" for n in nodes)
        return None, [f"the fleet is mid-rollout across phases ({spread}): finish moving every node first"]
    return phases.pop(), []


def phase_start(nodes: Sequence[NodeInfo], phase: Phase) -> float | None:
    """When the fleet entered ``phase``, as far as the registry knows (the earliest start among its nodes)."""
    starts = [n.started for n in nodes if n.phase == phase.value]
    return min(starts) if starts else None


def evaluate(phase: Phase, summary: Summary, milestones: dict[str, float | None], limits: Thresholds,
             *, now: float | None = None) -> list[str]:
    """Why the fleet in ``phase`` must not advance yet; an empty list means it may."""
    now = time.time() if now is None else now
    nxt = phase.next()
    if nxt is None:
        return ["the migration is done: there is no later phase"]
    reasons: list[str] = []
    if phase in COMPARED:
        if summary.decisions < limits.min_decisions:
            reasons.append(f"only {summary.decisions} compared decisions, need at least {limits.min_decisions}: "
                           "let the fleet run longer in this phase")
        if summary.false_grants > limits.max_false_grants:
            reasons.append(f"{summary.false_grants} false grants (R granted what H denied), allowed "
                           f"{limits.max_false_grants}: see the report's sample mismatches")
        if summary.false_deny_rate > limits.max_false_deny_rate:
            reasons.append(f"false-deny rate {summary.false_deny_rate:.3%} exceeds {limits.max_false_deny_rate:.3%}")
        if summary.error_rate > limits.max_error_rate:
            reasons.append(f"error rate {summary.error_rate:.3%} exceeds {limits.max_error_rate:.3%}: "
                           "see the report's errors")
    if phase in (Phase.DUAL, Phase.CUTOVER):
        reasons += _markers_moved(milestones, limits.done_ttl, now)
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
