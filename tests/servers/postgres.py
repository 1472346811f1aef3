"""A throwaway PostgreSQL server from the Debian package's binaries, for tests.

initdb and postgres refuse to run as root, so both run as the ``postgres`` system user (the Debian
package creates it) in a temp directory owned by that user, listening on a free loopback port with
trust authentication. ``postgres_server()`` yields a :class:`PostgresServer` and stops it at exit.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.common import ServerProcess, free_port, missing, port_open, temp_dir

SYSTEM_USER = "postgres"


def find_pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin that has initdb and postgres."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name))
    for initdb in reversed(candidates):
        folder = Path(initdb).parent
        if (folder / "postgres").is_file():
            return folder
    return None


@dataclass
class PostgresServer:
    port: int
    process: ServerProcess
    user: str = SYSTEM_USER
    database: str = "postgres"

    @property
    def url(self) -> str:
        """SQLAlchemy-style URL (psycopg 3 driver) of the server's default database."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def create_database(self, name: str) -> str:
        """Create a fresh database ``name`` (letters, digits, _) and return its URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=self.database,
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"


def _ready(port: int) -> bool:
    import psycopg

    if not port_open(port):
        return False
    with psycopg.connect(host="127.0.0.1", port=port, user=SYSTEM_USER, dbname="postgres",
                         connect_timeout=2) as conn:
        conn.execute("SELECT 1")
    return True


@contextlib.contextmanager
def postgres_server(max_connections: int = 300) -> Iterator[PostgresServer]:
    """Start a PostgreSQL server on a free loopback port; stop it (by pid) and delete its files at exit."""
    bindir = find_pg_bin()
    if bindir is None:
        missing("PostgreSQL server binaries (/usr/lib/postgresql/<major>/bin)",
                "apt-get install postgresql (tests/run does this)")
    assert bindir is not None
    try:
        owner = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        missing("the 'postgres' system user", "it is created by the Debian postgresql package")
        raise
    with temp_dir("pg") as root:
        os.chown(root, owner.pw_uid, owner.pw_gid)
        data = root / "data"
        initdb = subprocess.run(
            ["runuser", "-u", SYSTEM_USER, "--", str(bindir / "initdb"), "-D", str(data), "-U", SYSTEM_USER,
             "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, timeout=180, check=False,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}")
        port = free_port()
        log = root / "postgres.log"
        log.touch()
        os.chown(log, owner.pw_uid, owner.pw_gid)
        process = ServerProcess(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
             "-c", "listen_addresses=127.0.0.1", "-c", f"max_connections={max_connections}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            log=log, user=SYSTEM_USER,
            stop_signal=signal.SIGINT,  # fast shutdown: SIGTERM's smart one waits for every client to leave
        )
        try:
            process.wait_ready(lambda: _ready(port), 120, f"postgres on port {port}")
            yield PostgresServer(port=port, process=process)
        finally:
            process.stop()
