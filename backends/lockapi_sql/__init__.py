"""lockapi's SQL backend: lease rows in SQLite, PostgreSQL or MariaDB/MySQL (see docs/backends/sql.md)."""

from lockapi_sql.backend import MariaDBBackend, PostgresBackend, SQLBackend, SQLiteBackend

__all__ = ["MariaDBBackend", "PostgresBackend", "SQLBackend", "SQLiteBackend"]
