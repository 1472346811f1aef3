"""The test servers never outlive a test run that is killed outright (no fixture teardown)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.servers.common import wait_until

ROOT = Path(__file__).resolve().parents[1]

STARTER = textwrap.dedent("""
    import sys, time
    from tests.servers.redis import redis_server
    with redis_server() as server:
        print(server.process.pid, flush=True)
        time.sleep(600)
""")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_server_stops_when_the_test_run_that_started_it_is_killed() -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    server_pid = None
    try:
        assert starter.stdout is not None
        server_pid = int(starter.stdout.readline())
        assert _running(server_pid)
        starter.send_signal(signal.SIGKILL)
        starter.wait(10)
        wait_until(lambda: not _running(server_pid), 15, "the orphaned redis-server to stop")
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)
        if server_pid is not None and _running(server_pid):  # the test failed: still stop our server
            os.kill(server_pid, signal.SIGKILL)
