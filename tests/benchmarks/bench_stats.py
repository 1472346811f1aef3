"""Figures: every one is the median of several runs, reported with its spread (min-max)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """The median of ``runs`` with its min and max."""

    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Figure:
        return cls(tuple(float(v) for v in values if v is not None and not math.isnan(v)))

    @property
    def ok(self) -> bool:
        return bool(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else math.nan

    @property
    def low(self) -> float:
        return min(self.runs) if self.runs else math.nan

    @property
    def high(self) -> float:
        return max(self.runs) if self.runs else math.nan

    def scaled(self, factor: float) -> Figure:
        return Figure(tuple(v * factor for v in self.runs))

    def fmt(self, digits: int | None = None, unit: str = "") -> str:
        """``median (min-max)``, e.g. ``3,412 (3,210-3,520)``."""
        if not self.runs:
            return "n/a"
        m, lo, hi = (number(v, digits) for v in (self.median, self.low, self.high))
        return f"{m}{unit} ({lo}-{hi})"


def ratio(a: Figure, b: Figure) -> Figure:
    """Run-by-run ratio a/b (runs are paired: run i of both was measured in the same round)."""
    pairs = [x / y for x, y in zip(a.runs, b.runs, strict=False) if y]
    return Figure(tuple(pairs))


def number(value: float, digits: int | None = None) -> str:
    """A readable number: thousands separators for big values, 2-3 significant digits for small ones."""
    if math.isnan(value):
        return "n/a"
    if value == 0:
        return "0"
    if digits is not None:
        return f"{value:,.{digits}f}"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
