"""The HTML report opened in a real headless browser (Debian's Chromium through chromedriver, driven by
Selenium): it renders without console errors, the charts are there, and the readiness verdict and the
lag alarm are visible in the first screen, with each verdict class linked to its examples.

The records are a shadow fleet's (memory H and R, SQLite record store) with every class the operator
met in issue #18: a false grant, marker mismatches, uncompared releases, and stale replays behind a
lagging shadow.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lockapi_migration.records.model import ABSENT, DONE, GRANTED, NOT_ASKED, STALE, Record, Side
from lockapi_migration.records.store import LagSample

from lockapi import Job
from lockapi.cli import main as lockapi_main
from tests.migration.conftest import Fleet, backend_of
from tests.servers.common import find_binary, missing

VIEWPORT = (1280, 800)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = find_binary("chromium", "/usr/bin") or find_binary("chromium-browser", "/usr/bin")
    driver_path = find_binary("chromedriver", "/usr/bin", "/usr/lib/chromium")
    if chromium is None or driver_path is None:
        missing("chromium and chromium-driver", "apt-get install -y chromium chromium-driver (tests/run does this)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium", "pip install -e '.[test]' (tests/run does this)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def _fleet_with_every_class(fleet: Fleet) -> None:
    legacy = fleet.h()
    legacy.acquire("bad:1", ttl=60)  # H only: the shadow's R grant is a false grant
    node = fleet.node("shadow")
    assert node.try_acquire("bad:1") is None
    jobs, job = node.jobs(), Job("invoices", ttl=10)
    for element in jobs.lock_many(job, range(20)):
        jobs.successfully_processed(job, element)
    backend_of(node).flush()
    store = fleet.store()
    try:
        now = time.time()
        record = next(iter(store.records()))
        store.append([Record(now, record.node, "shadow", "done", "invoices:old", "", None, Side(DONE), Side(ABSENT)),
                      Record(now, record.node, "shadow", "acquire", "slow:1", "x", 5.0, Side(GRANTED, 9), NOT_ASKED,
                             26.0, STALE),
                      Record(now, record.node, "shadow", "release", "slow:1", "x", None, Side("true"), NOT_ASKED,
                             0.01, "shadow not held")])
        store.append_lag([LagSample(record.node, now // 60 * 60, 200, 0.0014, 25.0, 27.6, 1, 0, 0.0, 1.0)])
    finally:
        store.close()


def test_the_report_renders_with_the_verdict_in_the_first_screen(
        fleet: Fleet, tmp_path: Path, browser: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _fleet_with_every_class(fleet)
    monkeypatch.delenv("LOCKAPI_CONFIG", raising=False)
    monkeypatch.setenv("LOCKAPI_URL", fleet.h_url)
    monkeypatch.setenv("LOCKAPI_MIGRATION_TARGET", fleet.r_url)
    monkeypatch.setenv("LOCKAPI_MIGRATION_RECORD", fleet.record)
    page = tmp_path / "report.html"
    assert lockapi_main(["migrate", "report", "--html", str(page)]) == 0
    browser.get(page.as_uri())
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    assert browser.title == "lockapi migration report"
    found = browser.execute_script("""
        const box = el => el ? el.getBoundingClientRect() : null;
        const verdict = document.getElementById('verdict'), alarm = document.getElementById('lag-alarm');
        const links = [...document.querySelectorAll('a[href^="#examples-"]')];
        return {height: window.innerHeight, verdict: box(verdict), alarm: box(alarm),
                verdictText: verdict ? verdict.innerText : '', alarmText: alarm ? alarm.innerText : '',
                charts: [...document.querySelectorAll('svg')].filter(s => s.getBoundingClientRect().width > 0).length,
                links: links.map(a => a.getAttribute('href')),
                targets: links.filter(a => document.querySelector(a.getAttribute('href'))).length,
                classText: document.body.innerText};
    """)
    assert found["verdict"] is not None and 0 <= found["verdict"]["top"] < found["verdict"]["bottom"] <= found["height"]
    assert "NOT SAFE to advance from shadow to dual" in found["verdictText"]
    assert "1 false grants" in found["verdictText"], found["verdictText"]
    assert "the shadow replay lagged 26.00 s (p99)" in found["verdictText"], found["verdictText"]
    assert found["alarm"] is not None and found["alarm"]["bottom"] <= found["height"], found["alarm"]
    assert "LAG ALARM" in found["alarmText"]
    assert found["charts"] >= 4  # timeline, classes, lag per minute, latency (and the census)
    for verdict in ("false_grant", "marker_mismatch", "stale", "uncompared"):
        assert f"#examples-{verdict}" in found["links"], (verdict, found["links"])
    assert found["targets"] == len(found["links"])
    for line in ("R alone would have let two holders in", "not compared (not counted as agreement)",
                 "after the backfill it blocks", "Not a problem by itself; never blocks"):
        assert line in found["classText"], line
