"""The Prometheus adapter through a real HTTP scrape: in-process (memory, Redis), and `lockapi serve-metrics`
serving what other processes wrote in prometheus_client's multi-process mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import lockapi
from lockapi.cli import main
from lockapi.observability.catalogue import METRICS
from lockapi.observability.prometheus import serve

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> tuple[Samples, dict[str, Any]]:
    """({(sample name, labels): value}, {family name: family}) from GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in families.values() for s in f.samples}
    return samples, families


def sample(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


def workload(url: str, prefix: str) -> None:
    with lockapi.connect(url) as mgr:
        with mgr.acquire(f"{prefix}:1", ttl=10):
            assert mgr.try_acquire(f"{prefix}:1") is None
        mgr.acquire(f"{prefix}:kept-{os.getpid()}", ttl=30)  # still held at the scrape
        mgr.semaphore(prefix, 3).acquire(ttl=10).release()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_an_http_scrape_shows_every_metric_with_its_labels_and_values(registry: CollectorRegistry, url: str,
                                                                      prefix: str) -> None:
    handle = lockapi.instrument_prometheus(registry)
    endpoint = serve(0, registry=registry)
    try:
        workload(url, prefix)
        samples, families = scrape(endpoint.port)
    finally:
        endpoint.close()
        handle.uninstrument()
    backend = url.split("://")[0]
    # prometheus_client's parser names counter families without _total; histograms keep _seconds.
    for metric in METRICS:
        assert metric.exposed_name.removesuffix("_total") in families, metric.name
    assert families["lockapi_lock_attempts"].type == "counter"
    assert families["lockapi_lock_wait_duration_seconds"].type == "histogram"
    assert families["lockapi_lock_held"].type == "gauge"
    attempts = {(dict(ls)["op"], dict(ls)["outcome"]): v for (n, ls), v in samples.items()
                if n == "lockapi_lock_attempts_total" and dict(ls)["family"] == prefix}
    assert attempts == {("acquire", "granted"): 2, ("try_acquire", "denied"): 1, ("permit_acquire", "granted"): 1}
    assert sample(samples, "lockapi_lock_attempts_total", family=prefix, backend=backend) == 4
    assert sample(samples, "lockapi_lock_held", family=prefix, kind="lock") == 1
    assert sample(samples, "lockapi_lock_held", family=prefix, kind="permit") == 0
    assert sample(samples, "lockapi_lock_hold_duration_seconds_count", family=prefix, end="released") == 2
    assert sample(samples, "lockapi_lock_wait_duration_seconds_bucket", family=prefix, op="acquire",
                  outcome="granted", le="+Inf") == 2
    assert sample(samples, "lockapi_lock_wait_duration_seconds_bucket", family=prefix, op="acquire",
                  outcome="granted", le="300.0") == 2
    assert sample(samples, "lockapi_lease_operations_total", family=prefix, op="release", outcome="released") == 1


def test_instrumenting_a_registry_twice_reuses_its_metrics(registry: CollectorRegistry, prefix: str) -> None:
    lockapi.instrument_prometheus(registry)
    handle = lockapi.instrument_prometheus(registry)  # no "Duplicated timeseries": one sink per registry
    try:
        workload(f"memory://{prefix}", prefix)
    finally:
        handle.uninstrument()
    assert registry.get_sample_value("lockapi_lock_attempts_total", {
        "backend": "memory", "op": "try_acquire", "family": prefix, "outcome": "denied"}) == 1


WRITER = textwrap.dedent("""
    import sys, lockapi
    lockapi.instrument_prometheus()
    from tests.observability.test_prometheus import workload
    workload(sys.argv[1], sys.argv[2])
""")


def test_serve_metrics_serves_what_processes_without_an_endpoint_wrote(tmp_path: Path, url: str,
                                                                       prefix: str) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]
    for _ in range(2):  # two short-lived processes (cron jobs), each exits still "holding" prefix:kept
        subprocess.run([sys.executable, "-c", WRITER, url, prefix], env=env, cwd=root, check=True, timeout=120)
    server = subprocess.Popen([sys.executable, "-m", "lockapi.cli", "serve-metrics", "--port", "0", "--dir",
                               str(tmp_path)], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        samples, _ = scrape(port)
    finally:
        server.terminate()
        server.wait(30)
    assert sample(samples, "lockapi_lock_attempts_total", family=prefix, op="acquire", outcome="granted") == 4
    assert sample(samples, "lockapi_lock_attempts_total", family=prefix, op="try_acquire", outcome="denied") == 2
    assert sample(samples, "lockapi_lock_hold_duration_seconds_count", family=prefix) == 4
    # Both writers are dead: their live gauges (held leases) no longer count.
    assert sample(samples, "lockapi_lock_held", family=prefix) == 0


def test_serve_metrics_without_a_directory_says_what_to_do(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert main(["serve-metrics", "--port", "0"]) == 2
    assert "PROMETHEUS_MULTIPROC_DIR" in capsys.readouterr().err
    assert main(["serve-metrics", "--port", "0", "--dir", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
