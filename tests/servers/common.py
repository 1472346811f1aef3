"""Shared plumbing for test servers: free ports, process lifetime, and the CI-aware "missing" rule.

Every server the tests start is a child process of the test run, stopped (by its own pid) when its
fixture ends, and sent SIGTERM by the kernel if the test run dies without running its fixtures' teardown
(SIGKILL, an external timeout). Nothing here touches processes it did not start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(what: str, how: str) -> None:
    """A server, binary or jar the tests need is not here: fail in CI, skip loudly elsewhere."""
    message = f"MISSING {what}: {how}"
    if IN_CI:
        pytest.fail(message + " (CI=true: missing servers fail the run)", pytrace=False)
    print(f"\n*** {message} ***")
    pytest.skip(message)


def find_binary(name: str, *extra_dirs: str) -> str | None:
    """``name`` on PATH or in one of ``extra_dirs``."""
    found = shutil.which(name)
    if found:
        return found
    for folder in extra_dirs:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it is true; raise RuntimeError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # the server is still starting
            last_error = exc
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"lockapi-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when the thread that started it ends (Linux), so start
    servers from a thread that outlives them (pytest runs fixtures in its main thread)."""
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


class ServerProcess:
    """One server child process, with its output in ``log`` for error messages."""

    def __init__(self, argv: Sequence[str], *, log: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None, user: str | None = None,
                 stop_signal: int = signal.SIGTERM) -> None:
        self.argv = list(argv)
        self.stop_signal = stop_signal
        """What :meth:`stop` sends first: the server's own "shut down now, disconnecting clients"."""
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115 - closed in stop()
        full_env = {**os.environ, **(env or {})}
        cmd = ["runuser", "-u", user, "--", *self.argv] if user else self.argv
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=full_env, stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent(os.getpid()),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait for ``check``; on failure stop the process and raise with the end of its log."""
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{what} exited with {self.proc.returncode}")
            return check()

        try:
            wait_until(ready, timeout, what)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- {self.log} ---\n{self.log_tail()}") from None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this server's process group (the server and any children it forked)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def stop(self, grace: float = 10.0) -> None:
        """:attr:`stop_signal`, then SIGKILL after ``grace`` seconds. Idempotent."""
        if self.alive():
            self.signal(self.stop_signal)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()
