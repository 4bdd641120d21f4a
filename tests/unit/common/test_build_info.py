"""catalytic_build_info: the package version and the git sha, GIT_SHA first."""

from __future__ import annotations

import subprocess
from pathlib import Path

from prometheus_client import REGISTRY

from services.common import build_info
from services.common.build_info import UNKNOWN, checkout_sha, git_sha, record_build_info


def test_the_configured_sha_wins() -> None:
    assert git_sha(" 0123abc ") == "0123abc"


def test_without_one_the_checkouts_head_is_asked(tmp_path: Path) -> None:
    assert checkout_sha(tmp_path) == UNKNOWN  # no checkout there
    repository = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repository)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(repository),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.test",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    head = subprocess.run(
        ["git", "-C", str(repository), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert checkout_sha(repository) == head


def test_the_gauge_carries_service_version_and_sha() -> None:
    record_build_info("buildtest", "feedbee")
    labels = {"service": "buildtest", "version": build_info.package_version(), "git_sha": "feedbee"}
    assert REGISTRY.get_sample_value("catalytic_build_info", labels) == 1
    assert build_info.package_version() != UNKNOWN  # the package is installed in the venv
