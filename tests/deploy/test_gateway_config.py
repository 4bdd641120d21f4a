"""The gateway's committed Kubernetes config is current, and Envoy accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from deploy.k8s import gateway_config
from devstack import binaries
from gateway import render
from tests.deploy.manifests import REPO


def test_the_committed_config_is_current() -> None:
    committed = gateway_config.OUT.read_text()
    assert committed == gateway_config.generate(), "run `make k8s-gateway-config` and commit"


def test_envoy_validates_it(tmp_path: Path) -> None:
    # The files it names lie under IMAGE_ROOT in the image; here, the same layout from the
    # checkout (gen/, docs/, gateway/) and empty stand-ins for the /docs bundles.
    root = tmp_path / "image"
    root.mkdir()
    for top in ("gen", "docs", "gateway"):
        (root / top).symlink_to(REPO / top)
    for relative in render._ASSETS.values():
        (root / "node_modules" / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / "node_modules" / relative).touch()
    text = gateway_config.OUT.read_text()
    config = tmp_path / "envoy.yaml"
    config.write_text(text.replace(f'"{gateway_config.IMAGE_ROOT}/', f'"{root}/'))
    assert str(root) in config.read_text()
    result = subprocess.run(
        [str(binaries.envoy()), "--mode", "validate", "-c", str(config), "--log-level", "warn"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
