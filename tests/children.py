"""Child processes for tests: forked from a warm, single-threaded server instead of started cold.

A "spawn" child starts a new interpreter and imports lockapi, the backends and their drivers again: about
1 s on an idle machine and 2-3 s on a loaded one, paid by every worker of every multi-process test. Here
children come from multiprocessing's "forkserver", whose server process imports those modules once
(:data:`PRELOAD`) and then forks a child per ``start()`` in ~50 ms. The server never runs a test or opens
a connection, so a child starts as clean as a spawned one: no threads, sockets or locks inherited from
pytest's process. What a spawned child would have taken from the parent at ``start()`` and a forked one
would not, the environment and the working directory, is passed along and applied before the target runs
(tests set ``$LOCKAPI_*`` variables that their workers read).

Use :data:`CHILDREN` wherever a ``multiprocessing`` context is wanted: ``CHILDREN.Process(target=f,
args=...)``, ``CHILDREN.Event()``, ``CHILDREN.Queue()``. Targets and arguments must be picklable, as for
"spawn" (module-level functions).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from multiprocessing.context import ForkServerContext
from typing import Any

PRELOAD = [
    "lockapi", "lockapi.testing", "lockapi_memory", "lockapi_sql", "lockapi_redis", "lockapi_hazelcast",
    "lockapi_migration", "sqlalchemy", "psycopg", "pymysql", "redis", "hazelcast",
    "tests.reliability.checker", "tests.reliability.exactly_once", "tests.migration.e2e_worker",
]
"""Imported once by the fork server, so that no child imports them again."""


def _in_parent_context(env: Mapping[str, str], cwd: str, target: Callable[..., Any], args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> None:
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    target(*args, **kwargs)


class _Children(ForkServerContext):
    def Process(self, group: None = None, target: Callable[..., Any] | None = None, name: str | None = None,
                args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, *,
                daemon: bool | None = None) -> Any:
        assert target is not None, "a child process needs a target"
        wrapped = (dict(os.environ), os.getcwd(), target, tuple(args), dict(kwargs or {}))
        return super().Process(group, _in_parent_context, name, wrapped, daemon=daemon)


CHILDREN = _Children()
CHILDREN.set_forkserver_preload(PRELOAD)
