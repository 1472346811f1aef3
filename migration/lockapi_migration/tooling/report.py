"""The fleet's migration report: numbers computed from the classified records, as text or JSON.

:func:`summarize` does all the counting once; :func:`render_text` (terminal) and ``html.render_html``
only present a :class:`Summary`, and ``Summary.to_json()`` is the machine-readable form.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lockapi_migration.phases import Phase, census
from lockapi_migration.records.model import Record
from lockapi_migration.records.store import BACKFILL_DONE, LagSample, NodeInfo
from lockapi_migration.replay.lag import alarming
from lockapi_migration.tooling.classify import NOISE_WINDOW, Classified, Verdict, classify

ACQUIRE_OPS = ("acquire", "permit_acquire", "acquire_many")
BUCKETS = 40
SAMPLES = 25
NOT_COMPARED = frozenset({Verdict.UNCOMPARED, Verdict.STALE})
EXAMPLES = 5
"""Example records kept per verdict class (linked from the page's class table)."""


def prefix_of(name: str) -> str:
    """The job or name prefix a name is reported under: the part before the first ``:``."""
    return name.split(":", 1)[0] if ":" in name else name


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (q in [0, 100])."""
    if not values:
        return math.nan
    rank = max(0, min(len(values) - 1, math.ceil(q / 100 * len(values)) - 1))
    return values[rank]


@dataclass
class Bucket:
    """One time slice of the timeline chart: how its records were classified."""

    start: float
    decisions: int = 0
    agree: int = 0
    mismatches: int = 0
    noise: int = 0
    errors: int = 0


@dataclass
class LagMinute:
    """The fleet's replay lag in one minute (the worst node's figures, in seconds)."""

    minute: float
    count: int
    p50: float
    p99: float
    max: float
    stale: int
    dropped: int
    backlog: float
    alarm: bool


@dataclass
class Readiness:
    """The readiness gate's verdict for advancing from ``phase`` (``reasons`` empty: safe)."""

    phase: str | None
    next: str | None
    reasons: list[str]
    source: str
    """Where ``phase`` came from: the registry, ``--phase``, or the configuration."""
    decisions: int = 0
    """Compared decisions of ``phase`` the gate judged."""

    @property
    def safe(self) -> bool:
        return not self.reasons and self.phase is not None


@dataclass
class Summary:
    """Everything the reports show, counted once from the classified records (see :func:`summarize`)."""

    generated: float
    since: float | None
    records: int
    decisions: int
    """Records where both backends gave a decision."""
    acquire_decisions: int
    """Compared acquire decisions (the denominator of the false-deny rate)."""
    verdicts: dict[str, int]
    false_grants: int
    false_denies: int
    noise: int
    errors: int
    error_rate: float
    false_deny_rate: float
    noise_rate: float
    by_prefix: dict[str, dict[str, int]]
    latency: dict[str, dict[str, dict[str, float]]]
    """backend label -> op -> {count, p50, p90, p99, max} in milliseconds."""
    shadow_delay_ms: dict[str, float]
    top_errors: list[dict[str, Any]]
    timeline: list[Bucket]
    phases_seen: dict[str, int]
    """Records per phase."""
    nodes_seen: dict[str, str]
    """Node -> the phase of its latest record."""
    live_nodes: list[dict[str, Any]]
    census: dict[str, int]
    samples: list[dict[str, Any]]
    milestones: dict[str, float | None] = field(default_factory=dict)
    stale: int = 0
    stale_rate: float = 0.0
    """Stale records over the records whose shadow side ran (or was shed as stale)."""
    marker_mismatches_after_backfill: int = 0
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Verdict class -> up to :data:`EXAMPLES` records of it (name, times, both decisions)."""
    lag: list[LagMinute] = field(default_factory=list)
    lag_alarm: list[str] = field(default_factory=list)
    """Why the replay's lag is alarming (empty: it kept up)."""
    max_lag: float | None = None
    readiness: Readiness | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _latency(classified: Sequence[Classified]) -> dict[str, dict[str, dict[str, float]]]:
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    for item in classified:
        for label, side in (("h", item.record.h), ("r", item.record.r)):
            if side.latency is not None:
                samples[(label, item.record.op)].append(side.latency * 1000)
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (label, op), values in sorted(samples.items()):
        values.sort()
        out[label][op] = {"count": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
                          "p99": percentile(values, 99), "max": values[-1]}
    return dict(out)


def _timeline(classified: Sequence[Classified]) -> list[Bucket]:
    if not classified:
        return []
    first, last = classified[0].record.ts, classified[-1].record.ts
    width = max((last - first) / BUCKETS, 1.0)
    buckets = [Bucket(first + i * width) for i in range(int((last - first) / width) + 1)]
    for item in classified:
        bucket = buckets[min(len(buckets) - 1, int((item.record.ts - first) / width))]
        if item.verdict in NOT_COMPARED or item.verdict.is_error:
            bucket.errors += item.verdict.is_error
            continue
        bucket.decisions += 1
        bucket.agree += item.verdict is Verdict.AGREE
        bucket.mismatches += item.verdict.is_mismatch
        bucket.noise += item.verdict is Verdict.NOISE
    return buckets


def sample(item: Classified) -> dict[str, Any]:
    row = item.record.to_row()
    row["verdict"] = item.verdict.value
    row["raw"] = item.raw.value
    return row


def lag_minutes(samples: Sequence[LagSample]) -> list[LagMinute]:
    """The fleet's lag per minute: for each minute, the worst node's figures."""
    by_minute: dict[float, list[LagSample]] = defaultdict(list)
    for sample in samples:
        by_minute[sample.minute].append(sample)
    return [LagMinute(minute, sum(x.count for x in group), max(x.p50 for x in group), max(x.p99 for x in group),
                      max(x.max for x in group), sum(x.stale for x in group), sum(x.dropped for x in group),
                      max(x.backlog for x in group), any(alarming(x) for x in group))
            for minute, group in sorted(by_minute.items())]


def _lag_alarm(minutes: Sequence[LagMinute], delays_ms: Sequence[float], stale: int,
               max_lag: float | None) -> list[str]:
    reasons = []
    alarmed = [m for m in minutes if m.alarm]
    if alarmed:
        worst = max(alarmed, key=lambda m: max(m.max, m.backlog))
        reasons.append(f"the shadow replay fell behind in {len(alarmed)} of {len(minutes)} minutes (worst: "
                       f"{max(worst.max, worst.backlog):.2f} s at {_when(worst.minute)}, "
                       f"{sum(m.stale for m in alarmed)} stale, {sum(m.dropped for m in alarmed)} dropped)")
    if max_lag is not None and delays_ms and percentile(delays_ms, 99) > max_lag * 1000:
        reasons.append(f"replay lag p99 {percentile(delays_ms, 99) / 1000:.2f} s exceeds max_lag {max_lag:g} s")
    if stale and not reasons:
        reasons.append(f"{stale} replays ran past max_lag and were recorded stale, not compared")
    return reasons


def summarize(records: Iterable[Record], *, since: float | None = None, nodes: Sequence[NodeInfo] = (),
              milestones: dict[str, float | None] | None = None, window: float = NOISE_WINDOW,
              max_lag: float | None = None, lag: Sequence[LagSample] = ()) -> Summary:
    """Classify ``records`` (the whole fleet's) and count everything the reports show. ``max_lag``: a
    record whose shadow ran later than that is stale; ``lag``: the nodes' per-minute lag samples."""
    classified = sorted(classify(records, window=window, max_lag=max_lag), key=lambda c: c.record.ts)
    verdicts = Counter(c.verdict.value for c in classified)
    compared = [c for c in classified if c.verdict not in NOT_COMPARED and not c.verdict.is_error]
    acquires = [c for c in compared if c.record.op in ACQUIRE_OPS]
    by_prefix: dict[str, Counter[str]] = defaultdict(Counter)
    for c in classified:
        if c.verdict.is_mismatch or c.verdict in (Verdict.NOISE,) or c.verdict.is_error:
            by_prefix[prefix_of(c.record.name)][c.verdict.value] += 1
    errors = [c for c in classified if c.verdict.is_error]
    error_texts = Counter((side, text) for c in errors for side, text in
                          (("h", c.record.h.error), ("r", c.record.r.error)) if text)
    delays = sorted(c.record.shadow_delay * 1000 for c in classified if c.record.shadow_delay is not None)
    nodes_seen: dict[str, str] = {}
    for c in classified:
        nodes_seen[c.record.node] = c.record.phase
    mismatches = [c for c in classified if c.verdict.is_mismatch]
    noise = [c for c in classified if c.verdict is Verdict.NOISE]
    mismatches.sort(key=lambda c: c.verdict is not Verdict.FALSE_GRANT)
    false_grants = verdicts[Verdict.FALSE_GRANT.value]
    false_denies = verdicts[Verdict.FALSE_DENY.value]
    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in classified:
        if c.verdict is not Verdict.AGREE and len(examples[c.verdict.value]) < EXAMPLES:
            examples[c.verdict.value].append(sample(c))
    stale = verdicts[Verdict.STALE.value]
    replayed = sum(1 for c in classified if c.record.shadow_delay is not None or c.verdict is Verdict.STALE)
    backfill = (milestones or {}).get(BACKFILL_DONE)
    after_backfill = 0 if backfill is None else sum(
        1 for c in classified if c.verdict is Verdict.MARKER_MISMATCH and c.record.ts >= backfill)
    minutes = lag_minutes(lag)
    return Summary(
        generated=time.time(),
        since=since,
        records=len(classified),
        decisions=len(compared),
        acquire_decisions=len(acquires),
        verdicts=dict(sorted(verdicts.items())),
        false_grants=false_grants,
        false_denies=false_denies,
        noise=len(noise),
        errors=len(errors),
        error_rate=_rate(len(errors), len(classified)),
        false_deny_rate=_rate(false_denies, len(acquires)),
        noise_rate=_rate(len(noise), len(compared)),
        by_prefix={p: dict(sorted(c.items())) for p, c in sorted(by_prefix.items())},
        latency=_latency(classified),
        shadow_delay_ms={"p50": percentile(delays, 50), "p99": percentile(delays, 99),
                         "max": delays[-1] if delays else math.nan},
        top_errors=[{"side": side, "error": text, "count": n} for (side, text), n in error_texts.most_common(10)],
        timeline=_timeline(classified),
        phases_seen=dict(Counter(c.record.phase for c in classified)),
        nodes_seen=dict(sorted(nodes_seen.items())),
        live_nodes=[asdict(n) for n in nodes],
        census={p.value: n for p, n in census(Phase.parse(n.phase) for n in nodes).items()},
        samples=[sample(c) for c in (mismatches + noise)[:SAMPLES]],
        milestones=dict(milestones or {}),
        stale=stale,
        stale_rate=_rate(stale, replayed),
        marker_mismatches_after_backfill=after_backfill,
        examples=dict(examples),
        lag=minutes,
        lag_alarm=_lag_alarm(minutes, delays, stale, max_lag),
        max_lag=max_lag,
    )


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _when(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def verdict_lines(ready: Readiness | None, lag_alarm: Sequence[str] = ()) -> list[str]:
    """The readiness verdict and the lag alarm: what the report says first."""
    lines = []
    if ready is not None:
        if ready.phase is None:
            lines.append("NOT SAFE to advance: the fleet's phase is unknown")
        elif ready.safe:
            lines.append(f"SAFE to advance from {ready.phase} to {ready.next} (phase from {ready.source}; "
                         f"{ready.decisions} compared decisions judged)")
        else:
            lines.append(f"NOT SAFE to advance from {ready.phase}"
                         f"{' to ' + ready.next if ready.next else ''} (phase from {ready.source}):")
        lines += [f"  - {reason}" for reason in ready.reasons]
    if lag_alarm:
        lines.append("LAG ALARM: " + "; ".join(lag_alarm))
    return lines


def render_text(s: Summary) -> str:
    """The terminal summary: the verdict first, then the details an operator checks before a step."""
    lines = [
        *verdict_lines(s.readiness, s.lag_alarm),
        f"lockapi migration report ({'since ' + _when(s.since) if s.since else 'all records'})",
        f"  {s.false_grants} CRITICAL (false grants: H denied, R granted)" if s.false_grants
        else "  0 critical: no false grants",
        f"  records {s.records}, decisions compared {s.decisions} (acquires {s.acquire_decisions}), "
        f"stale {s.stale} ({s.stale_rate:.2%} of replays)",
        f"  false denies {s.false_denies} ({s.false_deny_rate:.2%} of acquires), "
        f"noise {s.noise} ({s.noise_rate:.2%}), errors {s.errors} ({s.error_rate:.2%})",
        f"  replay lag ms p50/p99/max: {_ms(s.shadow_delay_ms['p50'])} / {_ms(s.shadow_delay_ms['p99'])} / "
        f"{_ms(s.shadow_delay_ms['max'])}" + (f" (max_lag {s.max_lag:g} s)" if s.max_lag is not None else ""),
        "  verdicts: " + ", ".join(f"{k}={v}" for k, v in s.verdicts.items()),
    ]
    if s.by_prefix:
        lines.append("  mismatches, noise and errors by name prefix:")
        lines += [f"    {p}: " + ", ".join(f"{k}={v}" for k, v in c.items()) for p, c in s.by_prefix.items()]
    if s.latency:
        lines.append("  latency ms (p50 / p99 / max):")
        for label, ops in s.latency.items():
            for op, st in ops.items():
                lines.append(f"    {label.upper()} {op:<16} n={st['count']:<7} {_ms(st['p50'])} / "
                             f"{_ms(st['p99'])} / {_ms(st['max'])}")
    if s.lag:
        lines.append("  replay lag per minute (s, worst node): p50 / p99 / max, stale, dropped")
        lines += [f"    {_when(m.minute)} {m.p50:.3f} / {m.p99:.3f} / {m.max:.3f}, {m.stale}, {m.dropped}"
                  f"{'  ALARM' if m.alarm else ''}" for m in s.lag[-10:]]
    if s.top_errors:
        lines.append("  errors:")
        lines += [f"    {e['side'].upper()} x{e['count']}: {e['error']}" for e in s.top_errors]
    lines.append("  live nodes: " + (", ".join(f"{p}={n}" for p, n in s.census.items()) or "none"))
    lines.append("  milestones: " + ", ".join(f"{k}={_when(v)}" for k, v in s.milestones.items()))
    for row in s.samples[:5]:
        lines.append(f"  sample {row['verdict']}: {row['op']} {row['name']!r} on {row['node']} ({row['phase']}): "
                     f"H {row['h_decision']} R {row['r_decision']}")
    return "\n".join(lines)
