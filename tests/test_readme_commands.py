"""The README's two set-up commands: the demo on the embedded SQLite default, and the test command CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", setup, flags=re.S)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second() -> None:
    demo, tests = _setup_commands()
    assert demo.endswith("lockapi demo")
    assert tests == "bash tests/run"
    assert "exec bash tests/run" in (ROOT / ".ci" / "run").read_text()


def test_lockapi_demo_runs_on_the_embedded_sqlite_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKAPI_")}
    cli = Path(sys.executable).with_name("lockapi")
    out = subprocess.run([str(cli), "demo", "--elements", "200", "--workers", "3"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "on sqlite:///lockapi.sqlite3" in out.stdout
    assert "elements sent twice:     0" in out.stdout and "OK: every invariant held" in out.stdout
    assert (tmp_path / "lockapi.sqlite3").is_file()
