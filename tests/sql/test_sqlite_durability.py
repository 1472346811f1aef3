"""SQLite durability (issue 14): fencing tokens never repeat after a crash, under either ``synchronous``.

* A process killed mid-write (SIGKILL while it grants as fast as it can): the reopened file issues a
  token above every token the dead process handed out.
* A power loss under ``synchronous=normal`` may take back the last commits. Simulated by restoring a copy
  of the database and its WAL taken earlier: the next token is still above every token issued after the
  copy (tokens are seeded from the database clock).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lockapi
from tests.sql.conftest import Factory

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_tokens_never_repeat_after_the_process_is_killed_mid_write(tmp_path: Path, synchronous: str) -> None:
    url = f"sqlite:///{tmp_path / 'locks.db'}?synchronous={synchronous}"
    child = textwrap.dedent(f"""
        from tests.sql.conftest import backend_for
        backend = backend_for({url!r})
        while True:
            token = backend.try_acquire("n", "h", 0.5).token
            print(token, flush=True)
            backend.release("n", "h", token)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    issued = [int(proc.stdout.readline()) for _ in range(300)]
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=60)
    issued += [int(line) for line in rest.split() if line.isdigit()]
    with lockapi.connect(url) as manager:  # the dead process may have held "n": its 0.5 s lease ends
        token = manager.acquire("n", ttl=60, wait=30).token
    assert token > max(issued), (token, max(issued))


def test_tokens_never_repeat_after_a_power_loss_takes_back_commits(tmp_path: Path, make_backend: Factory) -> None:
    db = tmp_path / "locks.db"
    url = f"sqlite:///{db}?synchronous=normal"
    backend = make_backend(url)
    for _ in range(5):
        token = backend.try_acquire("n", "h", 60).token
        assert token is not None and backend.release("n", "h", token)
    saved = tmp_path / "saved"
    saved.mkdir()
    for part in ("locks.db", "locks.db-wal"):  # what the disk held at the last sync
        shutil.copy(tmp_path / part, saved / part)
    later = []
    for _ in range(50):  # commits the power loss takes back
        token = backend.try_acquire("n", "h", 60).token
        assert token is not None and backend.release("n", "h", token)
        later.append(token)
    backend.close()
    for part in ("locks.db", "locks.db-wal", "locks.db-shm"):
        (tmp_path / part).unlink(missing_ok=True)
    for part in ("locks.db", "locks.db-wal"):
        shutil.copy(saved / part, tmp_path / part)
    reopened = make_backend(url)
    token = reopened.try_acquire("n", "after", 60).token
    assert token is not None and token > max(later), "a token was issued twice"
