"""lockapi's own conformance classes: :class:`lockapi.testing.LockConformance` with warm child processes.

The suite's multi-process checks default to "spawn" (see ``LockConformance.process_context``): each child
imports lockapi, the backend and its driver again, 1-3 s per child on this shared machine, four children
in ``test_1_processes_never_overlap``. Classes here take theirs from :data:`tests.children.CHILDREN`
instead, a fork server that imported all of that once and forks a clean child in ~50 ms. SQLite's class
(tests/sql/test_conformance.py) keeps the default, so the suite is also run the way a third-party backend
runs it.
"""

from __future__ import annotations

from multiprocessing.context import ForkServerContext, SpawnContext

from lockapi.testing import LockConformance
from tests.children import CHILDREN


class Conformance(LockConformance):
    """:class:`LockConformance` whose child processes come from :data:`CHILDREN`."""

    process_context: SpawnContext | ForkServerContext = CHILDREN
