"""Functions the scheduled tests run in child processes (importable, so 'spawn' can pickle them)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lockapi


def fire(url: str, name: str, start: Any, log: str, at_least: float) -> None:
    """One "scheduler" firing the trigger: wait for ``start``, run the guarded job, append the outcome."""
    guard = lockapi.scheduled(name, at_most=60, at_least=at_least, url=url, on_skip=lambda s: "skipped")

    @guard
    def job() -> str:
        time.sleep(0.05)
        run = lockapi.current_run()
        assert run is not None
        return f"ran {run.token}"

    start.wait(60)
    outcome = job()
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {outcome}\n")
    Path(log + f".{os.getpid()}.done").touch()
