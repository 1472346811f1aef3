"""A throwaway MariaDB server from the Debian package's binaries, for tests.

``mariadb-install-db`` creates a data directory in a temp dir; ``mariadbd --user=root`` serves it on a free
loopback port with ``--skip-grant-tables`` (any user, no password). ``mariadb_server()`` yields a
:class:`MariaDBServer` with a database ``lockapi`` and stops the server at exit.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from tests.servers.common import ServerProcess, find_binary, free_port, missing, port_open, temp_dir

SBIN = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


@dataclass
class MariaDBServer:
    port: int
    process: ServerProcess
    database: str = "lockapi"

    @property
    def url(self) -> str:
        """SQLAlchemy-style URL (PyMySQL driver) of the test database."""
        return f"mariadb+pymysql://root@127.0.0.1:{self.port}/{self.database}"

    def create_database(self, name: str) -> str:
        """Create a fresh database ``name`` (letters, digits, _) and return its URL."""
        with _connect(self.port) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return f"mariadb+pymysql://root@127.0.0.1:{self.port}/{name}"


def _connect(port: int, timeout: int = 10):  # type: ignore[no-untyped-def]
    import pymysql

    return pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=timeout,
                           autocommit=True, charset="utf8mb4")


def _ready(port: int) -> bool:
    if not port_open(port):
        return False
    with _connect(port, 2) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    return True


@contextlib.contextmanager
def mariadb_server() -> Iterator[MariaDBServer]:
    """Start MariaDB on a free loopback port; stop it (by pid) and delete its files at exit."""
    install_db = find_binary("mariadb-install-db", *SBIN)
    mariadbd = find_binary("mariadbd", *SBIN)
    if install_db is None or mariadbd is None:
        missing("MariaDB server binaries (mariadbd, mariadb-install-db)",
                "apt-get install --no-recommends mariadb-server (tests/run does this)")
    assert install_db is not None and mariadbd is not None
    with temp_dir("mariadb") as root:
        data = root / "data"
        init = subprocess.run(
            [install_db, "--no-defaults", f"--datadir={data}", "--user=root", "--skip-test-db",
             "--auth-root-authentication-method=normal"],
            capture_output=True, text=True, timeout=300, check=False,
        )
        if init.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        port = free_port()
        process = ServerProcess(
            [mariadbd, "--no-defaults", "--user=root", f"--datadir={data}", f"--socket={root / 'mysqld.sock'}",
             f"--pid-file={root / 'mysqld.pid'}", f"--port={port}", "--bind-address=127.0.0.1",
             "--skip-grant-tables", "--skip-name-resolve", "--skip-log-bin", "--max-connections=300",
             "--innodb-flush-log-at-trx-commit=2", "--innodb-buffer-pool-size=64M",
             "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci"],
            log=root / "mariadbd.log",
        )
        try:
            process.wait_ready(lambda: _ready(port), 120, f"mariadbd on port {port}")
            with _connect(port) as conn, conn.cursor() as cur:
                cur.execute("CREATE DATABASE lockapi CHARACTER SET utf8mb4")
            yield MariaDBServer(port=port, process=process)
        finally:
            process.stop()
