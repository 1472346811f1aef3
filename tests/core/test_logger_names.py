"""Every logger of lockapi, its backends and the migration package is named under ``lockapi.`` (one tree
for an operator to configure: ``logging.getLogger("lockapi").setLevel(...)``)."""

from __future__ import annotations

import importlib
import logging
import pkgutil

PACKAGES = ["lockapi", "lockapi_memory", "lockapi_sql", "lockapi_redis", "lockapi_hazelcast", "lockapi_migration"]


def test_every_logger_is_under_lockapi() -> None:
    for top in PACKAGES:
        package = importlib.import_module(top)
        for module in pkgutil.walk_packages(package.__path__, top + "."):
            if module.name.startswith("lockapi.integrations."):
                continue  # imports APScheduler / Celery, optional extras with loggers of their own
            importlib.import_module(module.name)
    ours = [name for name in logging.root.manager.loggerDict if name.split(".")[0] in PACKAGES]
    assert ours, "no logger found: the walk imported nothing"
    stray = sorted(name for name in ours if name != "lockapi" and not name.startswith("lockapi."))
    assert not stray, f"loggers outside the lockapi tree: {stray}"


def test_core_modules_log_under_their_own_module_name() -> None:
    """``logging.getLogger(__name__)`` in every module of core, integrations included (a bare ``lockapi``
    logger hides which part spoke and cannot be tuned on its own)."""
    checked = []
    for module in pkgutil.walk_packages(importlib.import_module("lockapi").__path__, "lockapi."):
        try:
            loaded = importlib.import_module(module.name)
        except ImportError as exc:  # an integration whose optional extra is not installed
            assert module.name.startswith("lockapi.integrations."), f"{module.name}: {exc}"
            continue
        for attribute, value in vars(loaded).items():
            if isinstance(value, logging.Logger):
                assert value.name == module.name, (
                    f"{module.name}.{attribute} logs under {value.name!r}: use logging.getLogger(__name__)")
                checked.append(module.name)
    assert "lockapi.scheduling" in checked and "lockapi.aio.lease" in checked, checked
