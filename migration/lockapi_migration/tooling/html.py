"""The self-contained HTML report: one page, inline CSS and SVG, no scripts, no network access.

Every value that comes from records (names, node ids, errors) is HTML-escaped.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence

from lockapi_migration.tooling.report import Summary

COLORS = {"agree": "#3a7d44", "mismatches": "#c0392b", "noise": "#e67e22", "errors": "#7f8c8d",
          "h": "#2e86c1", "r": "#8e44ad"}
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
.crit{color:#fff;background:#c0392b;padding:4px 10px;display:inline-block}
.ok{color:#fff;background:#3a7d44;padding:4px 10px;display:inline-block}
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
    sections = [
        f"<h1>lockapi migration report</h1><p>{headline}</p>",
        f"<p><small>record store {_e(store)}; records since {_e(since)}; generated "
        f"{_e(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s.generated)))}</small></p>",
        _table(["records", "decisions compared", "acquires compared", "false grants", "false denies",
                "false-deny rate", "noise", "errors", "error rate"],
               [(s.records, s.decisions, s.acquire_decisions, s.false_grants, s.false_denies,
                 f"{s.false_deny_rate:.3%}", s.noise, s.errors, f"{s.error_rate:.3%}")]),
        "<h2>Decisions and agreement over time</h2>", _timeline(s),
        "<h2>Mismatches by class</h2>", _bars(verdict_bars),
        "<h2>Mismatches, noise and errors by job / name prefix</h2>",
        _table(["prefix", "counts"],
               [(p, ", ".join(f"{k}={v}" for k, v in c.items())) for p, c in s.by_prefix.items()]),
        "<h2>Latency per backend and operation (ms)</h2>", _bars(latency_bars, " ms"),
        _table(["backend", "op", "n", "p50", "p90", "p99", "max"], latency_rows),
        f"<p>shadow queue delay (ms): p50 {s.shadow_delay_ms['p50']:.2f}, p99 {s.shadow_delay_ms['p99']:.2f}, "
        f"max {s.shadow_delay_ms['max']:.2f}</p>",
        "<h2>Errors</h2>",
        _table(["side", "count", "error"], [(e["side"].upper(), e["count"], e["error"]) for e in s.top_errors]),
        "<h2>Fleet phase census (live nodes)</h2>", _bars([(p, float(n), COLORS["h"]) for p, n in s.census.items()]),
        _table(["node", "phase", "heartbeat age (s)"],
               [(n["node"], n["phase"], f"{s.generated - n['heartbeat']:.1f}") for n in s.live_nodes]),
        "<h3>Records per phase</h3>", _table(["phase", "records"], sorted(s.phases_seen.items())),
        "<h2>Sample mismatch records</h2>",
        _table(["time", "class", "node", "phase", "op", "name", "H", "R", "error / detail"], sample_rows),
    ]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>lockapi migration report</title>'
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n")
