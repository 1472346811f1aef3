"""Observability: OpenTelemetry metrics and traces, Prometheus metrics, bounded lock-family labels.

The adapters import their libraries only when called: ``lockapi.instrument()`` needs the extra
``lockapi[otel]`` (opentelemetry-api), ``lockapi.instrument_prometheus()`` needs ``lockapi[prometheus]``
(prometheus_client). Both build on the core hook :mod:`lockapi.observers`. docs/observability.md has
every metric, span and log line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lockapi.errors import ConfigError
from lockapi.observability.families import DEFAULT_LIMIT, OTHER, FamilyFunction, lock_family
from lockapi.observability.install import Instrumentation

if TYPE_CHECKING:
    from lockapi.manager import LockManager

__all__ = ["DEFAULT_LIMIT", "OTHER", "Instrumentation", "instrument", "instrument_prometheus", "lock_family",
           "serve_metrics"]


def _missing(extra: str, exc: ImportError) -> ConfigError:
    return ConfigError(f"{exc.name or 'a dependency'} is not installed: pip install 'lockapi[{extra}]'")


def instrument(meter_provider: Any = None, tracer_provider: Any = None, name_label: FamilyFunction | None = None,
               *, manager: LockManager | None = None, metrics: bool = True, traces: bool = True,
               family_limit: int = DEFAULT_LIMIT) -> Instrumentation:
    """Report lockapi's metrics and spans to OpenTelemetry (extra ``lockapi[otel]``).

    ``meter_provider`` / ``tracer_provider``: None uses the global ones (``opentelemetry.metrics`` /
    ``opentelemetry.trace``). ``name_label(name) -> str`` gives a lock name's family label (default
    :func:`lock_family`: the part before the first ``:``); at most ``family_limit`` families are
    reported, the rest as ``_other``. Applies to every manager of the process, existing and future,
    unless ``manager`` is given; calling it again for the same scope replaces the earlier call.
    ``metrics=False`` / ``traces=False`` leave one out. Returns a handle with ``uninstrument()``.
    """
    try:
        from lockapi.observability import otel
    except ImportError as exc:
        raise _missing("otel", exc) from exc
    return otel.instrument(meter_provider, tracer_provider, name_label, manager=manager, metrics_enabled=metrics,
                           traces_enabled=traces, family_limit=family_limit)


def instrument_prometheus(registry: Any = None, name_label: FamilyFunction | None = None, *,
                          manager: LockManager | None = None, family_limit: int = DEFAULT_LIMIT) -> Instrumentation:
    """Report lockapi's metrics through prometheus_client (extra ``lockapi[prometheus]``), in
    ``registry`` (default: prometheus_client's global one). Same scope and label rules as
    :func:`instrument`. Serve them with your own endpoint, :func:`serve_metrics`, or, for processes
    without one, prometheus_client's multi-process mode and ``lockapi serve-metrics``."""
    try:
        from lockapi.observability import prometheus
    except ImportError as exc:
        raise _missing("prometheus", exc) from exc
    return prometheus.instrument(registry, name_label, manager=manager, family_limit=family_limit)


def serve_metrics(port: int, addr: str = "127.0.0.1", registry: Any = None) -> Any:
    """Serve prometheus_client's ``registry`` at ``http://addr:port/metrics`` from a daemon thread of
    this process; returns the endpoint (``.port``, ``.close()``)."""
    try:
        from lockapi.observability import prometheus
    except ImportError as exc:
        raise _missing("prometheus", exc) from exc
    return prometheus.serve(port, addr, registry)
