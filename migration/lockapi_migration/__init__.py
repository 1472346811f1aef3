"""Migration between lock backends without downtime: phases, shadow mode, decision records, reports.

``lockapi.connect()`` opens :class:`MigrationBackend` (entry point ``migration``) when a
``[lockapi.migration]`` table or ``$LOCKAPI_MIGRATION_*`` is configured; ``lockapi migrate ...`` is the
operator CLI (:mod:`lockapi_migration.tooling.cli`). See docs/migration.md for the runbook.
"""

from lockapi_migration.backend import MigrationBackend
from lockapi_migration.phases import Phase

__all__ = ["MigrationBackend", "Phase"]
