"""Every metric lockapi reports: name, instrument, unit, labels and meaning, once for every adapter.

Names follow the OpenTelemetry conventions (dotted, UCUM units, ``{annotations}`` for counts); the
Prometheus adapter uses the names an OpenTelemetry-to-Prometheus exporter would give the same metric
(``lockapi.lock.wait.duration`` in seconds -> ``lockapi_lock_wait_duration_seconds``, counters end in
``_total``), so one dashboard serves both. docs/observability.md lists the same table (a test checks).
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTER, UPDOWN, HISTOGRAM = "counter", "updown", "histogram"

WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0)
"""Histogram bucket bounds of wait times, seconds: from a local round trip to minutes of queueing."""
HOLD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
"""Histogram bucket bounds of hold times, seconds: from an uncontended cycle to a four-hour job."""


@dataclass(frozen=True, eq=False)
class Metric:
    """One metric. Compared and hashed by identity: the catalogue's objects are the keys adapters use."""

    name: str
    instrument: str
    unit: str
    labels: tuple[str, ...]
    description: str
    buckets: tuple[float, ...] = ()

    @property
    def prometheus_name(self) -> str:
        """The name prometheus_client is given (it adds ``_total`` to counters itself)."""
        base = self.name.replace(".", "_")
        return f"{base}_seconds" if self.unit == "s" else base

    @property
    def exposed_name(self) -> str:
        """The metric family name in the Prometheus exposition (what PromQL selects)."""
        return self.prometheus_name + ("_total" if self.instrument == COUNTER else "")


ATTEMPTS = Metric(
    "lockapi.lock.attempts", COUNTER, "{attempt}", ("backend", "op", "family", "outcome"),
    "Acquire calls by outcome (granted, denied, timeout, error); acquire_many counts each name.")
WAIT = Metric(
    "lockapi.lock.wait.duration", HISTOGRAM, "s", ("backend", "op", "family", "outcome"),
    "Time from an acquire call to its decision (grant, denial, timeout or error).", WAIT_BUCKETS)
HOLD = Metric(
    "lockapi.lock.hold.duration", HISTOGRAM, "s", ("backend", "kind", "family", "end"),
    "Time a lease or permit was held: from its grant to its release (end=released) or to the last "
    "moment it can have been held when found lost (end=lost).", HOLD_BUCKETS)
HELD = Metric(
    "lockapi.lock.held", UPDOWN, "{lease}", ("backend", "kind", "family"),
    "Leases and permits this process holds now (granted, not yet released or known lost).")
WAITING = Metric(
    "lockapi.lock.waiting", UPDOWN, "{caller}", ("backend", "op", "family"),
    "Callers blocked in acquire now (their first attempt was denied; until granted or given up).")
LOST = Metric(
    "lockapi.lease.lost", COUNTER, "{lease}", ("backend", "kind", "family", "cause"),
    "Leases found lost before their release, by cause: expired (the backend no longer knew it at a "
    "release or extend), renew_failed (an auto-renewal was refused), backend_error (auto-renewal could "
    "not reach the backend until the ttl ran out), at_most (auto-renewal reached its `at_most` cap while "
    "the lease was still held).")
RENEWALS = Metric(
    "lockapi.lease.renewals", COUNTER, "{renewal}", ("backend", "family", "outcome"),
    "Auto-renewals by outcome (extended, not_held, error).")
OPERATIONS = Metric(
    "lockapi.lease.operations", COUNTER, "{operation}", ("backend", "op", "family", "outcome"),
    "Releases and explicit extends by outcome (released, extended, not_held, error).")
ERRORS = Metric(
    "lockapi.backend.errors", COUNTER, "{error}", ("backend", "op", "family", "error_type"),
    "Operations that raised, by exception class (BackendUnavailable, ...).")
MISMATCHES = Metric(
    "lockapi.migration.mismatches", COUNTER, "{record}", ("backend", "op", "family", "phase", "verdict"),
    "Migration decision records whose two sides disagreed or failed, by raw class (false_grant, "
    "false_deny, lease_diverged, marker_mismatch, error_h, error_r, timeout_h, timeout_r, dropped), "
    "before the noise analysis of `lockapi migrate report`.")

METRICS = (ATTEMPTS, WAIT, HOLD, HELD, WAITING, LOST, RENEWALS, OPERATIONS, ERRORS, MISMATCHES)

SPAN_OPS = ("acquire", "try_acquire", "permit_acquire", "permit_try_acquire", "acquire_many", "release",
            "permit_release", "extend", "permit_extend", "renew")
"""Core operations; the tracing adapter names each span ``lockapi.<op>``. Plugin steps add their own
(``lockapi.migration.shadow``...)."""
