"""A tiny horizontal bar-chart SVG writer: one bar per row (the median), a whisker for the spread
(min-max), an optional target line and a log scale for values spanning decades. No plotting library."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from tests.benchmarks.bench_stats import Figure, number

PALETTE = {"lockapi": "#2b6cb0", "raw": "#718096", "peer": "#dd6b20"}


@dataclass(frozen=True)
class Bar:
    label: str
    figure: Figure
    kind: str = "lockapi"
    """lockapi, raw or peer: picks the colour."""


def bar_chart(title: str, unit: str, bars: Sequence[Bar], *, log: bool = False,
              target: float | None = None, target_label: str = "target") -> str:
    """The SVG text of a horizontal bar chart of ``bars`` (medians, with min-max whiskers)."""
    bars = [b for b in bars if b.figure.ok and b.figure.high > 0]
    label_w, plot_w, right_w, row_h, top = 230, 430, 150, 24, 46
    width = label_w + plot_w + right_w
    height = top + row_h * max(len(bars), 1) + 44
    values = [b.figure.high for b in bars] + ([target] if target else [])
    hi = max(values, default=1.0) * 1.05
    lo = min((b.figure.low for b in bars if b.figure.low > 0), default=1.0)
    if log:
        lo_exp = math.floor(math.log10(min(lo, target or lo)))
        hi_exp = math.ceil(math.log10(hi))
        hi_exp = max(hi_exp, lo_exp + 1)

        def x(v: float) -> float:
            v = max(v, 10.0 ** lo_exp)
            return label_w + plot_w * (math.log10(v) - lo_exp) / (hi_exp - lo_exp)

        ticks = [10.0 ** e for e in range(lo_exp, hi_exp + 1)]
    else:
        step = _nice_step(hi / 5)
        ticks = [step * i for i in range(int(hi / step) + 2) if step * i <= hi * 1.2]
        top_v = max(ticks[-1], hi) if ticks else hi

        def x(v: float) -> float:
            return label_w + plot_w * max(v, 0.0) / top_v

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2:.0f}" y="20" text-anchor="middle" font-size="14" font-weight="bold">'
        f'{escape(title)}</text>',
    ]
    bottom = top + row_h * len(bars)
    for t in ticks:
        tx = x(t)
        out.append(f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{bottom}" stroke="#e2e8f0"/>')
        out.append(f'<text x="{tx:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#4a5568">'
                   f'{escape(number(t))}</text>')
    out.append(f'<text x="{label_w + plot_w / 2:.0f}" y="{bottom + 34}" text-anchor="middle" fill="#4a5568">'
               f'{escape(unit)}{" (log scale)" if log else ""} — bar: median, whisker: min-max of runs</text>')
    for i, bar in enumerate(bars):
        y = top + i * row_h
        f = bar.figure
        colour = PALETTE.get(bar.kind, "#2b6cb0")
        x0 = x(10.0 ** lo_exp) if log else label_w
        out.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{escape(bar.label)}</text>')
        out.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(x(f.median) - x0, 1):.1f}" height="{row_h - 8}" '
                   f'fill="{colour}"/>')
        mid = y + row_h / 2
        out.append(f'<line x1="{x(f.low):.1f}" y1="{mid:.1f}" x2="{x(f.high):.1f}" y2="{mid:.1f}" '
                   'stroke="#1a202c" stroke-width="1.5"/>')
        for edge in (f.low, f.high):
            out.append(f'<line x1="{x(edge):.1f}" y1="{mid - 5:.1f}" x2="{x(edge):.1f}" y2="{mid + 5:.1f}" '
                       'stroke="#1a202c" stroke-width="1.5"/>')
        out.append(f'<text x="{max(x(f.high), x(f.median)) + 6:.1f}" y="{y + 16}" fill="#1a202c">'
                   f'{escape(number(f.median))}</text>')
    if target:
        tx = x(target)
        out.append(f'<line x1="{tx:.1f}" y1="{top - 10}" x2="{tx:.1f}" y2="{bottom}" stroke="#c53030" '
                   'stroke-width="1.5" stroke-dasharray="5,3"/>')
        out.append(f'<text x="{tx:.1f}" y="{top - 12}" text-anchor="middle" fill="#c53030">'
                   f'{escape(target_label)}</text>')
    legend_x = label_w + plot_w + 20
    for j, (kind, colour) in enumerate(PALETTE.items()):
        if any(b.kind == kind for b in bars):
            ly = top + j * 18
            out.append(f'<rect x="{legend_x}" y="{ly}" width="12" height="12" fill="{colour}"/>')
            out.append(f'<text x="{legend_x + 18}" y="{ly + 10}">{kind}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    exp = math.floor(math.log10(raw))
    base = raw / 10**exp
    for nice in (1, 2, 2.5, 5, 10):
        if base <= nice:
            return nice * 10**exp
    return 10.0 ** (exp + 1)
