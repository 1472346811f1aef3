"""``lockapi run``: a distributed ``flock`` for cron, systemd timers and Kubernetes CronJobs.

``lockapi run --lock NAME --at-most 30m [--at-least 1m] [--wait 10s] -- CMD ARGS...`` on many hosts at
once runs CMD on one of them; the others exit at once (or after ``--wait``) with the skip code. The
guard is :class:`lockapi.ScheduledLock` (see :mod:`lockapi.scheduling` for how at-most, at-least and
the lease ttl relate). While CMD runs its lease is auto-renewed; if it is lost (renewal refused, or the
backend unreachable until the ttl ran out), CMD's process group gets SIGTERM, then SIGKILL after
``--kill-after``. So that CMD is gone before the lock ends at ``--at-most``, CMD gets SIGTERM
``--kill-after`` before that point and SIGKILL at it. Signals sent to ``lockapi run`` (TERM, INT, HUP,
QUIT, USR1, USR2) are forwarded to CMD's process group. One line on stderr per state change.

Exit codes (``EXIT_*`` below): CMD's own code (128+N if a signal N ended it); 75 skipped
(``--skip-exit``); 124 CMD terminated at ``--at-most``; 125 CMD terminated because the lease was lost;
126 CMD cannot be executed; 127 CMD not found; 2 bad usage or configuration; 3 backend unavailable
(CMD was not started).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import lockapi
from lockapi.errors import ConfigError, LeaseLost, LockError
from lockapi.scheduling import RunSkipped, ScheduledLock, ScheduledRun

EXIT_SKIPPED = 75
"""EX_TEMPFAIL: another invocation holds the lock (``--skip-exit`` changes it)."""
EXIT_AT_MOST = 124
"""CMD was still running when ``--at-most`` ran out, and was terminated (as ``timeout(1)``)."""
EXIT_LOST = 125
"""The lease was lost while CMD ran, and CMD was terminated."""
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number of seconds (``90``, ``1.5``) or units ``ms s m h d`` (``1h30m``)."""
    value = text.strip()
    with contextlib.suppress(ValueError):
        seconds = float(value)
        if seconds >= 0 and seconds != float("inf"):
            return seconds
    pos, total = 0, 0.0
    while pos < len(value):
        match = _PART.match(value, pos)
        if match is None:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (examples: 90, 1.5s, 500ms, 30m, 1h30m)")
    return total


def _exit_code(text: str) -> int:
    try:
        code = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an exit code (0-255)") from None
    if not 0 <= code <= 255:
        raise argparse.ArgumentTypeError(f"exit code must be 0-255, got {code}")
    return code


def register(sub: Any) -> None:
    """Add the ``run`` subcommand to the ``lockapi`` parser's subparsers."""
    p = sub.add_parser(
        "run", help="run a command on one of many hosts at a time (a distributed flock for cron)",
        description="Run CMD under the lock NAME: of many concurrent invocations exactly one runs it, the "
                    "others exit with the skip code. Durations: 90, 1.5s, 500ms, 30m, 1h30m.",
        epilog="exit codes: CMD's own (128+N if signal N ended it); 75 skipped (--skip-exit); 124 CMD "
               "terminated at --at-most; 125 CMD terminated because the lease was lost; 126 cannot "
               "execute CMD; 127 CMD not found; 2 bad usage; 3 backend unavailable.")
    p.add_argument("--lock", required=True, metavar="NAME", help="the lock name shared by every host")
    p.add_argument("--at-most", required=True, type=parse_duration, metavar="DURATION",
                   help="never hold the lock longer: CMD gets SIGTERM --kill-after before it and SIGKILL at it")
    p.add_argument("--at-least", type=parse_duration, default=0.0, metavar="DURATION",
                   help="keep the lock this long after the grant even if CMD ends sooner (above the clock "
                        "skew between hosts, below the schedule's interval)")
    p.add_argument("--wait", type=parse_duration, default=0.0, metavar="DURATION",
                   help="wait this long for the lock before skipping (default: skip at once)")
    p.add_argument("--ttl", type=parse_duration, default=None, metavar="DURATION",
                   help="the lease ttl, renewed every ttl/3 while CMD runs; a crashed host frees the lock "
                        "after it (default: 60s, within [--at-least, --at-most])")
    p.add_argument("--key", default=None, help="run once per KEY (e.g. the trigger's date): the key is marked "
                   "done when CMD exits 0 and every later invocation with it skips")
    p.add_argument("--kill-after", type=parse_duration, default=None, metavar="DURATION",
                   help="grace between SIGTERM and SIGKILL (default: 10s, or a tenth of --at-most if shorter)")
    p.add_argument("--skip-exit", type=_exit_code, default=EXIT_SKIPPED, metavar="CODE",
                   help=f"exit code of a skipped invocation (default {EXIT_SKIPPED}, EX_TEMPFAIL; 0 for "
                        "schedulers that should treat a skip as success)")
    p.add_argument("--url", help="backend URL (default: $LOCKAPI_URL, lockapi.toml, or the embedded SQLite file)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only problems (lease lost, at-most reached, CMD not started); cron mails "
                        "any output")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                   help="the command to run, after --")
    p.set_defaults(func=main)


@dataclass(frozen=True)
class RunSettings:
    """``lockapi run``'s arguments, checked before any I/O."""

    lock: str
    command: tuple[str, ...]
    at_most: float
    at_least: float = 0.0
    wait: float = 0.0
    ttl: float | None = None
    key: str | None = None
    kill_after: float | None = None
    skip_exit: int = EXIT_SKIPPED
    url: str | None = None
    quiet: bool = False

    @property
    def grace(self) -> float:
        return min(10.0, self.at_most / 10) if self.kill_after is None else self.kill_after


def settings_from(args: argparse.Namespace) -> RunSettings:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("lockapi run needs a command after --: lockapi run --lock NAME --at-most 30m -- CMD ARGS")
    settings = RunSettings(args.lock, tuple(command), args.at_most, args.at_least, args.wait, args.ttl, args.key,
                           args.kill_after, args.skip_exit, args.url, args.quiet)
    if settings.at_most <= 0:
        raise ConfigError("--at-most must be longer than 0")
    if settings.grace >= settings.at_most:
        raise ConfigError(f"--kill-after ({settings.grace:g} s) must be shorter than --at-most "
                          f"({settings.at_most:g} s): CMD must be gone before the lock ends")
    return settings


def main(args: argparse.Namespace) -> int:
    """The ``run`` subcommand (called by :func:`lockapi.cli.main`, which maps lockapi errors to 2/3)."""
    settings = settings_from(args)
    opened: list[lockapi.LockManager] = []
    try:  # every argument is checked here, before connecting
        guard = ScheduledLock(lambda: opened[0], settings.lock, at_most=settings.at_most,
                              at_least=settings.at_least, wait=settings.wait, ttl=settings.ttl, key=settings.key)
    except lockapi.InvalidArgument as exc:
        raise ConfigError(str(exc).replace("_", "-")) from None
    with lockapi.connect(settings.url) as mgr:
        opened.append(mgr)
        return Wrapper(mgr, settings, guard).run()


class _Interrupted(Exception):
    """A forwarded signal arrived while waiting for the lock: give up without running CMD."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _CommandFailed(Exception):
    """CMD exited non-zero: with --key the key is not marked done."""


def _show(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Wrapper:
    """One invocation: take the guard, run CMD in its own process group, watch the lease, end the run."""

    def __init__(self, manager: lockapi.LockManager, settings: RunSettings, guard: ScheduledLock) -> None:
        self.manager = manager
        self.settings = settings
        self.guard = guard
        guard.on_lost = self._lost
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()  # put() is signal-safe
        self._running = False

    def say(self, message: str, *, problem: bool = False) -> None:
        if problem or not self.settings.quiet:
            print(f"lockapi run: {self.settings.lock}: {message}", file=sys.stderr, flush=True)

    def _lost(self, run: ScheduledRun) -> None:  # from the renewer's thread
        self._events.put(("lost", run.lost_reason or "the lease was lost"))

    def _signalled(self, signum: int, frame: Any) -> None:  # in the main thread, between bytecodes
        if not self._running:
            raise _Interrupted(signum)
        self._events.put(("signal", signum))

    def run(self) -> int:
        s = self.settings
        previous = {sig: signal.signal(sig, self._signalled) for sig in FORWARDED_SIGNALS}
        try:
            try:
                run = self.guard.begin()
                self._running = True
            except RunSkipped as skipped:
                self.say(self._skip_line(skipped))
                return s.skip_exit
            except _Interrupted as stop:
                self.say(f"{_signal_name(stop.signum)} while waiting for the lock: not running the command")
                return 128 + stop.signum
            try:
                return self._supervise(run)
            except BaseException:
                with contextlib.suppress(LockError):
                    self.guard.end(run, RuntimeError("lockapi run failed"))
                raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _skip_line(self, skipped: RunSkipped) -> str:
        if skipped.reason == "done":
            return f"skipped: key {skipped.key!r} already done"
        held = ""
        with contextlib.suppress(LockError):
            info = self.manager.inspect(self.guard.lock_name(skipped.key))
            if info is not None:
                held = f": held by {info.holder} for {_show(info.ttl_remaining)} more"
        return f"skipped{held}"

    def _supervise(self, run: ScheduledRun) -> int:
        s = self.settings
        lease = run.lease
        assert lease is not None
        env = {**os.environ, "LOCKAPI_LOCK_NAME": s.lock, "LOCKAPI_LOCK_TOKEN": str(lease.token)}
        try:
            proc = subprocess.Popen(s.command, env=env, process_group=0)
        except OSError as exc:
            code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_EXECUTE
            self.say(f"cannot run {s.command[0]!r}: {exc.strerror or exc}; lock released", problem=True)
            self.guard.end(run, exc, hold=False)
            return code
        started = time.monotonic()
        key = "" if s.key is None else f" for key {s.key!r}"
        self.say(f"taken{key} (token {lease.token}); running {s.command[0]} (pid {proc.pid}), at most "
                 f"{_show(s.at_most)}")
        threading.Thread(target=lambda: self._events.put(("exit", proc.wait())), name="lockapi-run-wait",
                         daemon=True).start()
        try:
            returncode, ending = self._watch(proc, lease.renewal_cap)
        except BaseException:
            self._kill(proc, signal.SIGKILL)  # never leave CMD running unguarded
            raise
        seconds = time.monotonic() - started
        code = 128 - returncode if returncode < 0 else returncode
        how = (f"terminated by {_signal_name(-returncode)}" if returncode < 0 else f"exited {returncode}")
        error = None if returncode == 0 and ending is None else _CommandFailed(how)
        keep = max(run.granted_at + s.at_least - time.monotonic(), 0.0)
        try:
            self.guard.end(run, error)
        except LeaseLost:
            ending = ending or ("lost", EXIT_LOST)
        if ending is not None:
            why = (f"--at-most {_show(s.at_most)} reached" if ending[0] == "at-most"
                   else f"the lease was lost ({run.lost_reason or 'it expired'})")
            self.say(f"{s.command[0]} {how} after {_show(seconds)}: {why}; another host may run it now",
                     problem=True)
            return ending[1]
        after = (f"keeping the lock {_show(keep)} more (--at-least)" if keep > 0 and not
                 (s.key is not None and error is None) else
                 "key marked done" if s.key is not None and error is None else "lock released")
        self.say(f"{s.command[0]} {how} after {_show(seconds)}; {after}")
        return code

    def _watch(self, proc: subprocess.Popen[bytes], cap: float | None) -> tuple[int, tuple[str, int] | None]:
        """Forward signals and terminate CMD when the lease is lost or at_most comes, until CMD exits.
        Returns (CMD's returncode, (why, exit code) if it was terminated)."""
        s = self.settings
        assert cap is not None
        term_at, kill_at = cap - s.grace, cap
        ending: tuple[str, int] | None = None  # (why, exit code) once CMD is being terminated
        while True:
            now = time.monotonic()
            due = term_at if ending is None else kill_at
            try:
                kind, value = self._events.get(timeout=None if due == float("inf") else max(due - now, 0.0))
            except queue.Empty:
                if ending is None:
                    ending = ("at-most", EXIT_AT_MOST)
                    self.say(f"--at-most {_show(s.at_most)} ends in {_show(s.grace)}: sending SIGTERM to "
                             f"{s.command[0]}, SIGKILL at the end", problem=True)
                    self._kill(proc, signal.SIGTERM)
                else:
                    kill_at = float("inf")
                    self.say(f"sending SIGKILL to {s.command[0]}", problem=True)
                    self._kill(proc, signal.SIGKILL)
                continue
            if kind == "exit":
                returncode: int = value
                break
            if kind == "signal":
                self.say(f"forwarding {_signal_name(value)} to {s.command[0]}")
                self._kill(proc, value)
            elif kind == "lost" and ending is None:
                ending = ("lost", EXIT_LOST)
                kill_at = min(kill_at, time.monotonic() + s.grace)
                self.say(f"lease lost ({value}); sending SIGTERM to {s.command[0]}, SIGKILL in {_show(s.grace)}",
                         problem=True)
                self._kill(proc, signal.SIGTERM)
        return returncode, ending

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes], sig: int) -> None:
        """Send ``sig`` to CMD's process group (CMD and what it started), while CMD is unreaped."""
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
