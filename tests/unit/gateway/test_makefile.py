"""The Makefile installs what the gateway serves: after `make up` on a fresh clone, /docs works."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from gateway.render import REPO_ROOT


def dry_run(*args: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed (the Makefile is the project's entry point)")
    result = subprocess.run(
        [make, "--no-print-directory", "-n", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_up_installs_the_documentation_assets() -> None:
    """As on a fresh clone (package.json newer than any install): `make up` runs npm install,
    which brings swagger-ui-dist and redoc, before it starts the stack."""
    commands = dry_run("-W", "package.json", "up")
    assert "npm install" in commands
    assert commands.index("npm install") < commands.index("-m devstack up")


def test_lint_still_gets_buf_from_the_same_install() -> None:
    assert "npm install" in dry_run("-W", "package.json", "node_modules/.bin/buf")
