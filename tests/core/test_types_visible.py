"""An application type-checks against lockapi as installed by the README's command (issue 19, item 11):
the editable install must expose the packages as paths, not behind an import hook mypy cannot follow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

APP = '''
import lockapi
import lockapi.aio

def take(mgr: lockapi.LockManager) -> int:
    lease = mgr.acquire("invoice:42", ttl=30, wait=5)
    return lease.token

reveal_type(lockapi.aio.connect)
'''


def test_an_application_sees_lockapis_types(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "app.py"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert "AsyncLockManager" in out.stdout, out.stdout + out.stderr
    assert out.returncode == 0, out.stdout + out.stderr
