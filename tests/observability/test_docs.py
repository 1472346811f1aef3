"""docs/observability.md lists every metric (name, Prometheus name, unit, labels) and span; the Grafana
dashboard and the alert examples use only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lockapi.observability.catalogue import HISTOGRAM, METRICS, SPAN_OPS

DOCS = Path(__file__).resolve().parents[2] / "docs"
TEXT = (DOCS / "observability.md").read_text()
EXPOSED = {m.exposed_name for m in METRICS} | {
    m.exposed_name + suffix for m in METRICS if m.instrument == HISTOGRAM for suffix in ("_bucket", "_sum", "_count")}


def test_every_metric_has_its_row_with_unit_and_labels() -> None:
    rows = {line.split("|")[1].strip(" `"): line for line in TEXT.splitlines() if line.startswith("| `lockapi.")}
    for metric in METRICS:
        row = rows[metric.name]
        assert f"`{metric.exposed_name}`" in row and f"`{metric.unit}`" in row, metric.name
        assert ", ".join(metric.labels) in row, metric.name


def test_every_span_is_named() -> None:
    for op in SPAN_OPS:
        assert f"`lockapi.{op}`" in TEXT, op


def _names(text: str) -> set[str]:
    return set(re.findall(r"\blockapi_[a-z_]+(?=[{\[( ])", text))


def test_the_dashboard_and_the_alerts_use_real_metric_names() -> None:
    dashboard = json.loads((DOCS / "observability-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    used = set().union(*(_names(e) for e in exprs))
    assert used and used <= EXPOSED, used - EXPOSED
    alerts = TEXT.split("## Alerts", 1)[1].split("## Grafana", 1)[0]
    in_alerts = _names(alerts)
    assert {"lockapi_lease_lost_total", "lockapi_lock_wait_duration_seconds_bucket",
            "lockapi_backend_errors_total"} <= in_alerts <= EXPOSED
