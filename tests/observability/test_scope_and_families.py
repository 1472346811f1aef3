"""Where instrument() applies (process, one manager, replaced, removed) and the bounded family label."""

from __future__ import annotations

import logging

import pytest

import lockapi
from lockapi import observers
from lockapi.jobs import Job
from lockapi.observability import OTHER, lock_family
from lockapi.observability.families import Families
from tests.observability.conftest import Otel


def test_process_wide_instrumentation_covers_managers_opened_before_and_after(otel: Otel, prefix: str) -> None:
    before = lockapi.connect(f"memory://{prefix}")
    handle = lockapi.instrument(otel.meter_provider, otel.tracer_provider)
    try:
        after = lockapi.connect(f"memory://{prefix}")
        before.acquire(f"{prefix}:before").release()
        after.acquire(f"{prefix}:after").release()
        again = lockapi.instrument(otel.meter_provider, otel.tracer_provider)  # replaces: nothing counted twice
        assert observers.installed() == again.observers
        handle.uninstrument()  # the replaced handle no longer removes anything
        assert observers.installed() == again.observers
        after.acquire(f"{prefix}:again").release()
    finally:
        lockapi.instrument(otel.meter_provider).uninstrument()
        before.close()
    assert observers.installed() == ()
    assert otel.value("lockapi.lock.attempts", family=prefix) == 3
    assert len(otel.spans("lockapi.acquire")) == 3


def test_manager_scoped_instrumentation_sees_only_that_manager(otel: Otel, prefix: str) -> None:
    with lockapi.connect(f"memory://{prefix}") as mine, lockapi.connect(f"memory://{prefix}") as other:
        handle = lockapi.instrument(otel.meter_provider, otel.tracer_provider, manager=mine)
        mine.acquire(f"{prefix}:mine").release()
        other.acquire(f"{prefix}:other").release()
        handle.uninstrument()
    assert [s.attributes["lockapi.lock.name"] for s in otel.spans("lockapi.acquire")] == [f"{prefix}:mine"]
    assert otel.value("lockapi.lock.attempts", family=prefix) == 1


def test_prometheus_and_opentelemetry_can_observe_together(otel: Otel, prefix: str) -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    a = lockapi.instrument(otel.meter_provider, otel.tracer_provider)
    b = lockapi.instrument_prometheus(registry)
    try:
        with lockapi.connect(f"memory://{prefix}") as mgr:
            mgr.acquire(f"{prefix}:x").release()
    finally:
        a.uninstrument()
        b.uninstrument()
    assert otel.value("lockapi.lock.attempts", family=prefix) == 1
    assert registry.get_sample_value("lockapi_lock_attempts_total", {
        "backend": "memory", "op": "acquire", "family": prefix, "outcome": "granted"}) == 1


@pytest.mark.parametrize(("name", "family"), [
    ("invoice:42", "invoice"), ("invoice", "invoice"), ("a:b:c", "a"), (":x", ""),
    (Job("a:b").lock_name("7"), "a:b"), (Job("c\\d:e").lock_name("1:2"), "c\\d:e"),
])
def test_the_default_family_is_the_part_before_the_first_unescaped_colon(name: str, family: str) -> None:
    assert lock_family(name) == family


def test_a_custom_family_function_is_bounded_and_an_empty_or_failing_one_gives_other(
        otel: Otel, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    families = Families(lambda name: name, limit=3)  # the raw name: what the bound protects against
    with caplog.at_level(logging.WARNING, logger="lockapi.observability.families"):
        assert [families(f"n{i}") for i in range(5)] == ["n0", "n1", "n2", OTHER, OTHER]
        assert families("n1") == "n1"
    warnings = [r for r in caplog.records if getattr(r, "lockapi_event", None) == "family_limit"]
    assert len(warnings) == 1
    assert Families(lambda name: "")("x") == OTHER
    assert Families(lambda name: 1 / 0)("x") == OTHER  # type: ignore[arg-type,return-value]
    with pytest.raises(lockapi.InvalidArgumentType):
        lockapi.instrument(otel.meter_provider, name_label="not a function")  # type: ignore[arg-type]

    handle = lockapi.instrument(otel.meter_provider, otel.tracer_provider, name_label=lambda n: n.split("/")[0])
    try:
        with lockapi.connect(f"memory://{prefix}") as mgr:
            mgr.acquire(f"{prefix}/1").release()
    finally:
        handle.uninstrument()
    assert otel.value("lockapi.lock.attempts", family=prefix) == 1


def test_without_observers_no_operation_object_is_built(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    import lockapi.reporting

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an Operation was built without any observer")

    monkeypatch.setattr(lockapi.reporting, "Operation", refuse)
    with lockapi.connect(f"memory://{prefix}") as mgr:
        seen: list[lockapi.Event] = []
        mgr.add_listener(seen.append)
        lease = mgr.acquire(f"{prefix}:1", ttl=5, wait=1)
        assert lease.extend() and lease.release()
        mgr.acquire_many([f"{prefix}:2"])[f"{prefix}:2"].release()
    assert [(e.op, e.result) for e in seen] == [("acquire", "granted"), ("extend", "extended"),
                                              ("release", "released"), ("acquire_many", "granted"),
                                              ("release", "released")]
