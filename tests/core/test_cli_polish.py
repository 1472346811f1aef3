"""The command line as a shell user meets it: help with defaults, one exit-code table, pipes, JSON."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import lockapi
from lockapi.cli import EXIT_CONFIG, EXIT_FREE, EXIT_OK, build_parser, main

LOCKAPI = Path(sys.executable).with_name("lockapi")


def _parsers(parser: argparse.ArgumentParser, path: str = "lockapi") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_flag_of_every_subcommand_has_help_and_shows_its_default() -> None:
    missing = []
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        assert "``" not in text and "register(" not in text, f"{path} --help shows an internal docstring"
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or action.dest in ("help", "version"):
                continue
            if not action.help:
                missing.append(f"{path} {action.option_strings[0]}: no help text")
            elif action.default not in (None, False) and "default" not in parser._get_formatter()._get_help_string(
                    action):  # type: ignore[attr-defined]
                missing.append(f"{path} {action.option_strings[0]}: default {action.default!r} not shown")
    assert not missing, "\n".join(missing)


def test_a_closed_pipe_ends_quietly() -> None:
    out = subprocess.run(f"'{LOCKAPI}' backends | head -1", shell=True, capture_output=True, text=True, timeout=60)
    assert out.stdout.count("\n") == 1
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr


def test_inspect_tells_held_from_free_by_exit_code_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    url = "memory://cli-inspect"
    assert main(["inspect", "job:1", "--url", url, "--json"]) == EXIT_FREE
    assert json.loads(capsys.readouterr().out) == {"name": "job:1", "held": False, "lease": None}
    with lockapi.connect(url) as mgr:
        lease = mgr.acquire("job:1", ttl=30)
        assert main(["inspect", "job:1", "--url", url, "--json"]) == EXIT_OK
        shown = json.loads(capsys.readouterr().out)
        assert shown["held"] is True and shown["lease"]["token"] == lease.token
        assert shown["lease"]["holder"] == lease.holder and 0 < shown["lease"]["ttl_remaining"] <= 30
        lease.release()


def test_a_bad_option_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "memory://x?no_such_option=1"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("lockapi: configuration error:") and err.count("\n") == 1
