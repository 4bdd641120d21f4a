"""What build a service runs: catalytic_build_info{service, version, git_sha} = 1.

The version is the installed package's (importlib.metadata). The git sha is GIT_SHA when the
image or the deployment sets it, else what `git rev-parse --short HEAD` says about the checkout
the code runs from (a developer's machine, the test stack), else "unknown" (ADR 47).
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
from importlib import metadata
from pathlib import Path

from prometheus_client import Gauge

logger = logging.getLogger("catalytic.build_info")

PACKAGE = "catalytic-lattice-platform"
UNKNOWN = "unknown"
# The checkout this code runs from, when it runs from one.
_REPOSITORY = Path(__file__).resolve().parents[2]
_GIT_TIMEOUT_S = 2.0
_SHA = re.compile(r"[0-9a-f]{4,64}")

BUILD_INFO = Gauge(
    "catalytic_build_info",
    "1, labelled with the service, its version (package metadata) and the git commit it was"
    " built from (GIT_SHA, else the checkout's HEAD, else unknown).",
    ["service", "version", "git_sha"],
)


def package_version() -> str:
    """The installed package's version; "unknown" when it is not installed (a bare checkout)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return UNKNOWN


@functools.cache
def checkout_sha(repository: Path = _REPOSITORY) -> str:
    """`git rev-parse --short HEAD` in `repository`; "unknown" without git or a checkout.

    Run once per process (cached): at start-up, never per scrape.
    """
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, fixed args
            cwd=repository,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and _SHA.fullmatch(sha) else UNKNOWN


def git_sha(configured: str | None) -> str:
    """GIT_SHA as configured, else the checkout's HEAD, else "unknown"."""
    return configured.strip() if configured and configured.strip() else checkout_sha()


def record_build_info(service: str, configured_sha: str | None) -> None:
    """Sets catalytic_build_info for `service` (idempotent: a restarted server sets the same)."""
    version, sha = package_version(), git_sha(configured_sha)
    BUILD_INFO.labels(service, version, sha).set(1)
    logger.info("%s version %s, git sha %s", service, version, sha)
