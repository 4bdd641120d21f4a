"""The monitoring tests' tools (promtool, amtool, the exporters): found, or the test fails
saying which package to install. The one place tests look them up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack.monitoring import MissingBinaryError, program

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
RULES = MONITORING / "rules"
RULE_TESTS = MONITORING / "tests"


def tool(name: str) -> str:
    """The path of `name` (promtool, amtool, an exporter: devstack.monitoring.PROGRAMS); a
    missing tool fails the test (never skips), naming its Debian package: `make system-deps`."""
    try:
        return str(program(name))
    except MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Runs a command with a bounded time; its output is what the test reports."""
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=120, check=False
    )
