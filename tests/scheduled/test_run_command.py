"""``lockapi run`` with real processes on SQLite and Redis: one of N runs CMD, skips exit 75, CMD's exit
code passes through, signals reach CMD, a lost lease terminates CMD, at-least keeps the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import lockapi
from lockapi.run import EXIT_AT_MOST, EXIT_LOST, EXIT_NOT_FOUND, EXIT_SKIPPED, parse_duration

ROOT = Path(__file__).resolve().parents[2]
CMD = [sys.executable, "-m", "tests.scheduled.cmd"]
TIMEOUT = 60.0


def wait_for(what: str, condition: Callable[[], object], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Wrapper:
    """One ``lockapi run`` process."""

    def __init__(self, url: str, lock: str, options: list[str], command: list[str]) -> None:
        env = {**os.environ, "LOCKAPI_URL": url, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lockapi.cli", "run", "--lock", lock, *options, "--", *command],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def wrappers() -> Iterator[Callable[..., Wrapper]]:
    started: list[Wrapper] = []

    def start(url: str, lock: str, options: list[str], command: list[str]) -> Wrapper:
        started.append(Wrapper(url, lock, options, command))
        return started[-1]

    yield start
    for w in started:
        w.kill()


def cmd(tmp: Path, *extra: str, go: bool = True) -> list[str]:
    args = [*CMD, "--log", str(tmp / "log"), "--ready", str(tmp / "ready"), "--signals", str(tmp / "signals")]
    return [*args, *(["--go", str(tmp / "go")] if go else []), *extra]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_one_of_four_concurrent_invocations_runs_the_others_exit_75(
        shared_url: str, lock_name: str, tmp_path: Path, wrappers: Callable[..., Wrapper]) -> None:
    runs = [wrappers(shared_url, lock_name, ["--at-most", "5m"], cmd(tmp_path)) for _ in range(4)]
    wait_for("three invocations to skip", lambda: sum(w.proc.poll() is not None for w in runs) == 3)
    (tmp_path / "go").touch()
    results = [w.finish() for w in runs]
    assert sorted(code for code, _ in results) == [0, EXIT_SKIPPED, EXIT_SKIPPED, EXIT_SKIPPED]
    assert len(lines(tmp_path / "log")) == 1, "CMD ran more than once"
    for code, err in results:
        assert (" skipped: held by " in err) == (code == EXIT_SKIPPED), err
        assert all(line.startswith(f"lockapi run: {lock_name}: ") for line in err.splitlines()), err


def test_skip_exit_code_is_configurable(shared_url: str, lock_name: str, tmp_path: Path,
                                        manager: lockapi.LockManager, wrappers: Callable[..., Wrapper]) -> None:
    lease = manager.acquire(lock_name, ttl=60)
    try:
        code, err = wrappers(shared_url, lock_name, ["--at-most", "1m", "--skip-exit", "0"], cmd(tmp_path)).finish()
        assert code == 0 and "skipped" in err
        code, err = wrappers(shared_url, lock_name, ["-q", "--at-most", "1m"], cmd(tmp_path)).finish()
        assert code == EXIT_SKIPPED and err == "", "--quiet prints nothing for a skip"
    finally:
        lease.release()
    assert lines(tmp_path / "log") == []


@pytest.mark.parametrize(("extra", "expected"), [(["--exit", "42"], 42), (["--exit", "0"], 0)])
def test_cmd_exit_code_passes_through(shared_url: str, lock_name: str, tmp_path: Path, extra: list[str],
                                      expected: int, manager: lockapi.LockManager,
                                      wrappers: Callable[..., Wrapper]) -> None:
    code, err = wrappers(shared_url, lock_name, ["--at-most", "1m"], cmd(tmp_path, *extra, go=False)).finish()
    assert code == expected, err
    assert manager.inspect(lock_name) is None, "released at once without --at-least"


def test_cmd_killed_by_a_signal_exits_128_plus_n(shared_url: str, lock_name: str,
                                                 wrappers: Callable[..., Wrapper]) -> None:
    code, err = wrappers(shared_url, lock_name, ["--at-most", "1m"], ["sh", "-c", "kill -KILL $$"]).finish()
    assert code == 128 + signal.SIGKILL and "terminated by SIGKILL" in err


def test_missing_command_exits_127_and_frees_the_lock(shared_url: str, lock_name: str, manager: lockapi.LockManager,
                                                      wrappers: Callable[..., Wrapper]) -> None:
    code, err = wrappers(shared_url, lock_name, ["--at-most", "1m", "--at-least", "1m"],
                         ["/nonexistent/command"]).finish()
    assert code == EXIT_NOT_FOUND and "cannot run" in err
    assert manager.inspect(lock_name) is None, "a command that never started does not keep the lock"


def test_signals_are_forwarded_to_cmd(shared_url: str, lock_name: str, tmp_path: Path,
                                      manager: lockapi.LockManager, wrappers: Callable[..., Wrapper]) -> None:
    w = wrappers(shared_url, lock_name, ["--at-most", "5m"], cmd(tmp_path, "--term-exit", "7"))
    wait_for("CMD to start", (tmp_path / "ready").exists)
    w.proc.send_signal(signal.SIGUSR1)
    wait_for("CMD to get SIGUSR1", lambda: lines(tmp_path / "signals") == ["SIGUSR1"])
    assert w.proc.poll() is None, "lockapi run survives a forwarded signal"
    w.proc.send_signal(signal.SIGTERM)
    code, err = w.finish()
    assert lines(tmp_path / "signals") == ["SIGUSR1", "SIGTERM"]
    assert code == 7, err
    assert "forwarding SIGTERM" in err
    assert manager.inspect(lock_name) is None


def test_lost_lease_terminates_cmd(shared_url: str, lock_name: str, tmp_path: Path, manager: lockapi.LockManager,
                                   wrappers: Callable[..., Wrapper]) -> None:
    w = wrappers(shared_url, lock_name, ["--at-most", "5m", "--ttl", "1"], cmd(tmp_path))
    wait_for("CMD to start", (tmp_path / "ready").exists)
    assert manager.backend.force_release(lock_name) is True  # an operator (or expiry) takes it away
    code, err = w.finish()
    assert code == EXIT_LOST, err
    assert lines(tmp_path / "signals") == ["SIGTERM"]
    assert "lease lost" in err and "sending SIGTERM" in err


def test_cmd_that_ignores_sigterm_gets_sigkill(shared_url: str, lock_name: str, tmp_path: Path,
                                               manager: lockapi.LockManager,
                                               wrappers: Callable[..., Wrapper]) -> None:
    w = wrappers(shared_url, lock_name, ["--at-most", "5m", "--ttl", "1", "--kill-after", "0.5"],
                 cmd(tmp_path, "--ignore-term", "--forever", go=False))
    wait_for("CMD to start", (tmp_path / "ready").exists)
    pid = int((tmp_path / "ready").read_text())
    assert manager.backend.force_release(lock_name)
    code, err = w.finish()
    assert code == EXIT_LOST, err
    assert "sending SIGKILL" in err and lines(tmp_path / "signals") == ["SIGTERM"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_stopped_wrapper_past_its_ttl_terminates_cmd_when_it_resumes(
        shared_url: str, lock_name: str, tmp_path: Path, manager: lockapi.LockManager,
        wrappers: Callable[..., Wrapper]) -> None:
    """SIGSTOP the wrapper (not CMD) past its ttl; another host takes the lock; on SIGCONT the wrapper's
    renewal is refused and it terminates CMD."""
    w = wrappers(shared_url, lock_name, ["--at-most", "5m", "--ttl", "1"], cmd(tmp_path))
    wait_for("CMD to start", (tmp_path / "ready").exists)
    w.proc.send_signal(signal.SIGSTOP)
    try:
        thief = manager.acquire(lock_name, ttl=60, wait=30)
    finally:
        w.proc.send_signal(signal.SIGCONT)
    code, err = w.finish()
    assert code == EXIT_LOST, err
    assert lines(tmp_path / "signals") == ["SIGTERM"]
    assert thief.is_held(), "the wrapper never releases a successor's lock"
    thief.release()


def test_at_least_keeps_the_lock_after_a_quick_cmd(shared_url: str, lock_name: str, tmp_path: Path,
                                                   manager: lockapi.LockManager,
                                                   wrappers: Callable[..., Wrapper]) -> None:
    at_least = 4.0
    started = time.monotonic()
    code, err = wrappers(shared_url, lock_name, ["--at-most", "1m", "--at-least", str(at_least)],
                         cmd(tmp_path, go=False)).finish()
    assert code == 0 and "keeping the lock" in err, err
    info = manager.inspect(lock_name)
    assert info is not None, "the lock was released after a quick CMD despite --at-least"
    assert info.ttl_remaining <= at_least
    assert time.monotonic() - started < at_least + 30  # it exited without sleeping the hold out
    code, err = wrappers(shared_url, lock_name, ["--at-most", "1m"], cmd(tmp_path, go=False)).finish()
    if manager.inspect(lock_name) is not None:
        assert code == EXIT_SKIPPED, err
    wait_for("the at-least hold to end", lambda: manager.inspect(lock_name) is None)
    code, err = wrappers(shared_url, lock_name, ["--at-most", "1m"], cmd(tmp_path, go=False)).finish()
    assert code == 0, err
    assert len(lines(tmp_path / "log")) == 2


def test_wait_runs_after_the_holder_finishes(shared_url: str, lock_name: str, tmp_path: Path,
                                             wrappers: Callable[..., Wrapper]) -> None:
    first = wrappers(shared_url, lock_name, ["--at-most", "5m"], cmd(tmp_path))
    wait_for("the first CMD to start", (tmp_path / "ready").exists)
    second = wrappers(shared_url, lock_name, ["--at-most", "5m", "--wait", "1m"], cmd(tmp_path))
    time.sleep(0.5)  # not synchronisation: only gives the second a chance to (wrongly) run or skip
    assert second.proc.poll() is None, "a --wait invocation skipped or ran while the lock was held"
    assert len(lines(tmp_path / "log")) == 1
    (tmp_path / "go").touch()
    assert first.finish()[0] == 0
    assert second.finish()[0] == 0
    tokens = [int(line.split()[1]) for line in lines(tmp_path / "log")]
    assert len(tokens) == 2 and tokens[0] < tokens[1], "$LOCKAPI_LOCK_TOKEN is the fencing token"


def test_at_most_terminates_cmd_before_the_lock_ends(shared_url: str, lock_name: str, tmp_path: Path,
                                                     wrappers: Callable[..., Wrapper]) -> None:
    code, err = wrappers(shared_url, lock_name, ["--at-most", "2", "--kill-after", "1"],
                         cmd(tmp_path, "--forever", go=False)).finish()
    assert code == EXIT_AT_MOST, err
    assert lines(tmp_path / "signals") == ["SIGTERM"]


def test_key_runs_once_and_a_failed_run_is_retried(shared_url: str, lock_name: str, tmp_path: Path,
                                                   wrappers: Callable[..., Wrapper]) -> None:
    options = ["--at-most", "1m", "--key", "2026-12-02"]
    assert wrappers(shared_url, lock_name, options, cmd(tmp_path, "--exit", "1", go=False)).finish()[0] == 1
    assert wrappers(shared_url, lock_name, options, cmd(tmp_path, go=False)).finish()[0] == 0
    code, err = wrappers(shared_url, lock_name, options, cmd(tmp_path, go=False)).finish()
    assert code == EXIT_SKIPPED and "already done" in err
    assert len(lines(tmp_path / "log")) == 2


@pytest.mark.parametrize("bad", [
    ["--at-most", "1m"],                                   # no command
    ["--at-most", "soon", "--", "true"],
    ["--at-most", "10", "--kill-after", "10", "--", "true"],
    ["--at-most", "10", "--at-least", "20", "--", "true"],
    ["--at-most", "10", "--ttl", "20", "--", "true"],
    ["--at-most", "10", "--skip-exit", "256", "--", "true"],
])
def test_bad_usage_exits_2_before_connecting(tmp_path: Path, bad: list[str]) -> None:
    db = tmp_path / "locks.db"
    env = {**os.environ, "LOCKAPI_URL": f"sqlite:///{db}"}
    result = subprocess.run([sys.executable, "-m", "lockapi.cli", "run", "--lock", "x", *bad], env=env,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2, result.stderr
    assert not db.exists(), "nothing is written for a rejected invocation"


def test_backend_down_exits_3_without_running_cmd(tmp_path: Path) -> None:
    env = {**os.environ, "LOCKAPI_URL": "redis://127.0.0.1:1/0?timeout=1"}  # nothing listens on port 1
    result = subprocess.run([sys.executable, "-m", "lockapi.cli", "run", "--lock", "x", "--at-most", "1m", "--",
                             *cmd(tmp_path, go=False)], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 3, result.stderr
    assert "backend unavailable" in result.stderr and lines(tmp_path / "log") == []


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("1.5s", 1.5), ("500ms", 0.5), ("30m", 1800),
                                               ("1h30m", 5400), ("2d", 172800)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
