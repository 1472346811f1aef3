"""The self-contained HTML report: one page, inline CSS and SVG, no scripts, no network access.

Top of the page (the first screen): the readiness gate's verdict for the next phase (safe / not safe and
every reason) and the lag alarm. Then the numbers, a table of every verdict class with a one-line
explanation and a link to its example records (name, times, both decisions), the charts (agreement over
time, classes, replay lag per minute, latency, fleet census) and the examples. Every value that comes
from records (names, node ids, errors) is HTML-escaped.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence

from lockapi_migration.tooling.classify import EXPLAIN, Verdict
from lockapi_migration.tooling.report import Summary


def _ms(value: float) -> str:
    """Milliseconds as "1.23 ms", or as seconds from one second on."""
    if math.isnan(value):
        return "-"
    return f"{value:.2f} ms" if value < 1000 else f"{value / 1000:.2f} s"

COLORS = {"agree": "#3a7d44", "mismatches": "#c0392b", "noise": "#e67e22", "errors": "#7f8c8d",
          "h": "#2e86c1", "r": "#8e44ad"}
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
.crit{color:#fff;background:#c0392b;padding:4px 10px;display:inline-block}
.ok{color:#fff;background:#3a7d44;padding:4px 10px;display:inline-block}
.verdict{padding:.6em 1em;margin:.5em 0;border-left:8px solid}
.verdict.safe{border-color:#3a7d44;background:#eef7ef}.verdict.unsafe{border-color:#c0392b;background:#fbeeee}
.verdict h2{margin:0;border:0;font-size:1.3em}.verdict ul{margin:.3em 0}
.alarm{padding:.4em 1em;background:#fdf2e3;border-left:8px solid #e67e22}
small{color:#666}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if rows else "<p><small>none</small></p>"


def _bars(items: Sequence[tuple[str, float, str]], unit: str = "") -> str:
    """A horizontal bar chart: (label, value, colour) per row."""
    if not items:
        return "<p><small>none</small></p>"
    top = max(v for _, v, _ in items if not math.isnan(v)) or 1.0
    row_h, label_w, width = 22, 260, 420
    parts = []
    for i, (label, value, color) in enumerate(items):
        y = i * row_h
        w = 0.0 if math.isnan(value) else max(1.0, width * value / top)
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{_e(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{color}"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 15}" font-size="12">{value:.4g}{_e(unit)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 90}" '
            f'height="{len(items) * row_h}">{"".join(parts)}</svg>')


def _timeline(s: Summary) -> str:
    """Stacked bars per time bucket (agree / mismatches / noise / errors) and the agreement rate line."""
    if not s.timeline:
        return "<p><small>no records</small></p>"
    width, height, pad = 900, 220, 30
    n = len(s.timeline)
    bar_w = (width - pad) / n
    totals = [b.decisions + b.errors for b in s.timeline]
    top = max(totals) or 1
    parts = [f'<line x1="{pad}" y1="{height - pad}" x2="{width}" y2="{height - pad}" stroke="#999"/>',
             f'<text x="0" y="12" font-size="11">{top}</text><text x="0" y="{height - pad}" font-size="11">0</text>']
    line = []
    for i, b in enumerate(s.timeline):
        x, base = pad + i * bar_w, float(height - pad)
        for key, value in (("agree", b.agree), ("mismatches", b.mismatches), ("noise", b.noise),
                           ("errors", b.errors)):
            h = (height - 2 * pad) * value / top
            if h > 0:
                base -= h
                parts.append(f'<rect x="{x:.1f}" y="{base:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}" '
                             f'fill="{COLORS[key]}"><title>{_e(key)}: {value}</title></rect>')
        if b.decisions:
            rate = b.agree / b.decisions
            line.append(f"{x + bar_w / 2:.1f},{pad + (height - 2 * pad) * (1 - rate):.1f}")
    if line:
        parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="#000" stroke-width="1.5">'
                     "<title>agreement rate (top = 100%)</title></polyline>")
    start = time.strftime("%H:%M:%S", time.localtime(s.timeline[0].start))
    end = time.strftime("%H:%M:%S", time.localtime(s.timeline[-1].start))
    parts.append(f'<text x="{pad}" y="{height - 8}" font-size="11">{start}</text>'
                 f'<text x="{width - 60}" y="{height - 8}" font-size="11">{end}</text>')
    legend = " ".join(f'<span style="color:{c}">&#9632; {k}</span>' for k, c in COLORS.items() if len(k) > 1)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{"".join(parts)}</svg>'
            f"<p>{legend} <span>&#9473; agreement rate</span></p>")


def _verdict(s: Summary) -> str:
    """The readiness gate's verdict and the lag alarm, for the first screen."""
    ready, parts = s.readiness, []
    if ready is not None:
        if ready.safe:
            title = f"SAFE to advance from {ready.phase} to {ready.next}"
        elif ready.phase is None:
            title = "NOT SAFE to advance: the fleet's phase is unknown"
        else:
            title = f"NOT SAFE to advance from {ready.phase}" + (f" to {ready.next}" if ready.next else "")
        reasons = "".join(f"<li>{_e(r)}</li>" for r in ready.reasons)
        parts.append(f'<section id="verdict" class="verdict {"safe" if ready.safe else "unsafe"}">'
                     f"<h2>{_e(title)}</h2><ul>{reasons}</ul><small>readiness gate (`lockapi migrate check`): "
                     f"phase from {_e(ready.source)}, {ready.decisions} compared decisions of that phase judged"
                     "</small></section>")
    if s.lag_alarm:
        parts.append(f'<p id="lag-alarm" class="alarm"><b>LAG ALARM</b>: {_e("; ".join(s.lag_alarm))}</p>')
    return "".join(parts)


def _classes(s: Summary) -> str:
    """Every verdict class seen: its count, one line on what it means, a link to its examples."""
    rows = []
    for verdict in Verdict:
        count = s.verdicts.get(verdict.value, 0)
        if not count and verdict not in (Verdict.FALSE_GRANT, Verdict.STALE):
            continue
        link = (f'<a href="#examples-{verdict.value}">examples</a>' if s.examples.get(verdict.value) else "")
        rows.append(f"<tr><td><b>{_e(verdict.value)}</b></td><td>{count}</td><td>{_e(EXPLAIN[verdict])}</td>"
                    f"<td>{link}</td></tr>")
    return ("<table><tr><th>class</th><th>records</th><th>what it means</th><th></th></tr>"
            f"{''.join(rows)}</table>")


def _examples(s: Summary) -> str:
    parts = []
    for verdict, rows in s.examples.items():
        table = _table(["time", "node", "phase", "op", "name", "holder", "H (decision, token, ms)",
                        "R (decision, token, ms)", "replay lag ms", "error / detail"],
                       [(_clock(r["ts"]), r["node"], r["phase"], r["op"], r["name"], r["holder"], _side(r, "h"),
                         _side(r, "r"), "-" if r["shadow_delay"] is None else f"{1000 * r['shadow_delay']:.1f}",
                         r["h_error"] or r["r_error"] or r["detail"] or "") for r in rows])
        parts.append(f'<h3 id="examples-{_e(verdict)}">{_e(verdict)}</h3>{table}')
    return "".join(parts) or "<p><small>none</small></p>"


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def _side(row: dict[str, object], label: str) -> str:
    latency = row[f"{label}_latency"]
    shown = "-" if latency is None else f"{1000 * float(latency):.2f}"  # type: ignore[arg-type]
    return f"{row[f'{label}_decision'] or 'not asked'}, {row[f'{label}_token'] or '-'}, {shown}"


def _lag(s: Summary) -> str:
    """Replay lag per minute (worst node): p99 and max bars, the max_lag line, alarmed minutes flagged."""
    if not s.lag:
        return "<p><small>no lag samples (no shadow or cutover node recorded any)</small></p>"
    items = [(f"{time.strftime('%H:%M', time.localtime(m.minute))} p99{' ALARM' if m.alarm else ''}", m.p99,
              COLORS["mismatches"] if m.alarm else COLORS["agree"]) for m in s.lag[-30:]]
    table = _table(["minute", "replays", "p50 ms", "p99 ms", "max s", "backlog s", "stale", "dropped", ""],
                   [(_clock(m.minute)[:-7], m.count, f"{1000 * m.p50:.1f}", f"{1000 * m.p99:.1f}", f"{m.max:.2f}",
                     f"{m.backlog:.2f}", m.stale, m.dropped, "ALARM" if m.alarm else "") for m in s.lag[-30:]])
    return _bars(items, " s") + table


def render_html(s: Summary, store: str) -> str:
    """The whole page for summary ``s``; ``store`` is the (already redacted) record store URL."""
    headline = (f'<span class="crit">{s.false_grants} CRITICAL: false grants</span>' if s.false_grants
                else '<span class="ok">0 critical: no false grants</span>')
    verdict_bars = [(k, float(v), COLORS["mismatches"] if k.startswith("false") else COLORS["errors"])
                    for k, v in s.verdicts.items() if k != "agree"]
    latency_rows, latency_bars = [], []
    for label, ops in s.latency.items():
        for op, st in ops.items():
            stats = (f"{st[k]:.2f}" for k in ("p50", "p90", "p99", "max"))
            latency_rows.append((label.upper(), op, int(st["count"]), *stats))
            latency_bars.append((f"{label.upper()} {op} p99", st["p99"], COLORS[label]))
    sample_rows = [(time.strftime("%H:%M:%S", time.localtime(r["ts"])), r["verdict"], r["node"], r["phase"], r["op"],
                    r["name"], f"{r['h_decision']} {r['h_token'] or ''}", f"{r['r_decision']} {r['r_token'] or ''}",
                    r["h_error"] or r["r_error"] or r["detail"] or "") for r in s.samples]
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.since)) if s.since else "the beginning"
    delay = s.shadow_delay_ms
    sections = [
        f"<h1>lockapi migration report</h1>{_verdict(s)}<p>{headline} &nbsp; replay lag p50 {_ms(delay['p50'])}, "
        f"p99 {_ms(delay['p99'])}, max {_ms(delay['max'])}; {s.stale} stale, not compared</p>",
        f"<p><small>record store {_e(store)}; records since {_e(since)}; generated "
        f"{_e(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s.generated)))}</small></p>",
        _table(["records", "decisions compared", "acquires compared", "false grants", "false denies",
                "false-deny rate", "noise", "errors", "error rate"],
               [(s.records, s.decisions, s.acquire_decisions, s.false_grants, s.false_denies,
                 f"{s.false_deny_rate:.3%}", s.noise, s.errors, f"{s.error_rate:.3%}")]),
        "<h2>Verdict classes</h2>", _classes(s),
        "<h2>Decisions and agreement over time</h2>", _timeline(s),
        "<h2>Replay lag per minute</h2>", _lag(s),
        "<h2>Mismatches by class</h2>", _bars(verdict_bars),
        "<h2>Mismatches, noise and errors by job / name prefix</h2>",
        _table(["prefix", "counts"],
               [(p, ", ".join(f"{k}={v}" for k, v in c.items())) for p, c in s.by_prefix.items()]),
        "<h2>Latency per backend and operation (ms)</h2>", _bars(latency_bars, " ms"),
        _table(["backend", "op", "n", "p50", "p90", "p99", "max"], latency_rows),
        "<h2>Errors</h2>",
        _table(["side", "count", "error"], [(e["side"].upper(), e["count"], e["error"]) for e in s.top_errors]),
        "<h2>Fleet phase census (live nodes)</h2>", _bars([(p, float(n), COLORS["h"]) for p, n in s.census.items()]),
        _table(["node", "phase", "heartbeat age (s)"],
               [(n["node"], n["phase"], f"{s.generated - n['heartbeat']:.1f}") for n in s.live_nodes]),
        "<h3>Records per phase</h3>", _table(["phase", "records"], sorted(s.phases_seen.items())),
        "<h2>Examples per class</h2>", _examples(s),
        "<h2>Sample mismatch records</h2>",
        _table(["time", "class", "node", "phase", "op", "name", "H", "R", "error / detail"], sample_rows),
    ]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<link rel="icon" href="data:,"><title>lockapi migration report</title>'
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n")
