"""Plugin discovery (including a third-party backend), the CLI, and the demo on memory://."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lockapi.cli import main
from lockapi.demo import DemoSettings, run


def test_a_third_party_package_adds_a_backend_by_entry_point(tmp_path: Path) -> None:
    pkg = tmp_path / "acme_locks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from lockapi_memory import MemoryBackend

        class AcmeBackend(MemoryBackend):
            description = "acme's own lock store"
    '''))
    dist = tmp_path / "acme_locks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-locks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[lockapi.backends]\nacme = acme_locks:AcmeBackend\n")
    code = textwrap.dedent('''
        import lockapi
        with lockapi.connect("acme://store") as mgr:
            lease = mgr.acquire("x", ttl=5)
            print(type(mgr.backend).__name__, lease.token, lease.release())
    ''')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["AcmeBackend", "1", "True"]
    listing = subprocess.run([sys.executable, "-m", "lockapi.cli", "backends"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert "acme" in listing.stdout and "acme's own lock store" in listing.stdout


def test_cli_backends_lists_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "memory" in out and "lockapi_memory.MemoryBackend" in out


def test_cli_check_and_inspect(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "memory://cli"]) == 0
    assert "acquire" in capsys.readouterr().out
    assert main(["inspect", "some-lock", "--url", "memory://cli"]) == 4  # free
    assert "is free" in capsys.readouterr().out


def test_cli_reports_configuration_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "nope://x"]) == 2
    assert "installed" in capsys.readouterr().err
    assert main(["demo", "--url", "memory://", "--workers", "0"]) == 2


def test_demo_keeps_every_invariant_on_memory(tmp_path: Path) -> None:
    verdict = run(DemoSettings("memory://demo-test", workers=4, elements=200, concurrency=2, call_ms=1.0),
                  out=open(os.devnull, "w"), workdir=tmp_path)  # noqa: SIM115
    assert verdict.ok, verdict.render()
    assert sum(verdict.per_worker.values()) == 200
    assert verdict.peak_concurrency <= 2


def test_a_mode_option_naming_a_registered_variant_selects_it(tmp_path: Path) -> None:
    """``scheme://...?mode=X`` resolves to the plugin ``scheme+X`` when one is registered (and consumes
    the option); a mode naming no registered variant stays an option for the plugin to judge."""
    pkg = tmp_path / "acme_variants"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from lockapi_memory import MemoryBackend

        class Plain(MemoryBackend):
            pass

        class Fast(MemoryBackend):
            pass
    '''))
    dist = tmp_path / "acme_variants-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-variants\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[lockapi.backends]\nacmev = acme_variants:Plain\nacmev+fast = acme_variants:Fast\n")
    code = textwrap.dedent('''
        import lockapi
        from lockapi.errors import ConfigError
        for url, options in [("acmev://s", {}), ("acmev://s?mode=fast", {}), ("acmev://s?mode=FAST", {}),
                             ("acmev://s", {"mode": "fast"}), ("acmev+fast://s", {})]:
            with lockapi.connect(url, **options) as mgr:
                print(type(mgr.backend).__name__, mgr.backend.config.scheme)
        try:
            lockapi.connect("acmev://s?mode=slow")
        except ConfigError as exc:
            print("ConfigError", "mode" in str(exc))
    ''')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["Plain acmev"] + ["Fast acmev+fast"] * 4 + ["ConfigError True"]
