"""promtool and amtool for the monitoring tests: found on PATH, or the test fails saying how."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
RULES = MONITORING / "rules"
RULE_TESTS = MONITORING / "tests"


def tool(name: str) -> str:
    """The path of `name`; a missing tool fails the test (never skips): `make system-deps`."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run `make system-deps` (Debian packages prometheus and"
            " prometheus-alertmanager)",
            pytrace=False,
        )
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Runs a command with a bounded time; its output is what the test reports."""
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=120, check=False
    )
