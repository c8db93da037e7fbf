"""Run ``labctl calc ...`` sub-commands through the real CLI parser (shared by the calc tests)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from labctl.cli import build_parser


def run_calc(
    command: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Parse ``labctl calc COMMAND ARGV`` and run it; returns (exit code, stdout, stderr)."""
    args = build_parser().parse_args(["calc", command, *argv])
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_calc_json(
    command: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    """Run with ``--json``; assert success and exactly one JSON object on stdout."""
    code, out, err = run_calc(command, ["--json", *argv], capsys)
    assert code == 0, err
    assert err == ""
    lines = out.strip().splitlines()
    assert len(lines) == 1  # one JSON object
    return json.loads(lines[0])


def run_calc_usage_error(command: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run with ``--json``; assert exit 2, nothing on stdout and one error line; return it."""
    code, out, err = run_calc(command, ["--json", *argv], capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"labctl calc {command}: error: ")
    assert "Traceback" not in err
    return lines[0]
