"""Where LockConformance's multi-process checks start their children: ``process_context``."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path
from typing import Any

import pytest

import lockapi
from lockapi.testing import LockConformance
from tests.children import CHILDREN
from tests.conformance import Conformance
from tests.sql import test_conformance as sql_conformance  # a module: its classes are not collected here


def test_the_published_suite_spawns_by_default() -> None:
    assert LockConformance.process_context.get_start_method() == "spawn"
    assert sql_conformance.TestSQLiteConformance.process_context is LockConformance.process_context


def test_lockapis_own_classes_fork_from_the_warm_server() -> None:
    assert Conformance.process_context is CHILDREN


class _Counted(type(CHILDREN)):  # type: ignore[misc]
    """The warm fork server, counting the children it starts."""

    started = 0

    def Process(self, *args: Any, **kwargs: Any) -> Any:
        type(self).started += 1
        return super().Process(*args, **kwargs)


def test_a_multi_process_check_takes_its_children_from_process_context(tmp_path: Path) -> None:
    class Suite(LockConformance):
        process_context = _Counted()

    url = f"sqlite:///{tmp_path / 'locks.db'}"
    with lockapi.connect(url) as manager:
        Suite().test_6_waiter_in_another_process_granted_promptly(manager, url, {}, f"ctx:{uuid.uuid4().hex}",
                                                                  tmp_path)
    assert _Counted.started == 1


def test_a_fork_context_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """Plain "fork" would copy pytest's threads and connections into the child: the checks refuse it
    before starting anything."""
    class Suite(LockConformance):
        process_context = multiprocessing.get_context("fork")  # type: ignore[assignment]

    url = f"sqlite:///{tmp_path / 'locks.db'}"
    with lockapi.connect(url) as manager, pytest.raises(TypeError, match="process_context starts children by 'fork'"):
        Suite().test_6_waiter_in_another_process_granted_promptly(manager, url, {}, f"ctx:{uuid.uuid4().hex}",
                                                                  tmp_path)
