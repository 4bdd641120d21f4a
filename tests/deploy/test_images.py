"""Static checks of deploy/images/ (no podman): every file a Containerfile copies exists after
`make protos` / `make web-assets`, the runtime stages run as uid 10001, pip installs only the
hashed lock, the gateway image holds every file the rendered Envoy config names under /app, and
the SBOM script's parsing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.images import sbom

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "deploy" / "images"
CONTAINERFILES = sorted(IMAGES.glob("*.Containerfile"))
GENERATED = (".cache/images/", "gen/", "node_modules/")  # made by make images / protos / npm


def _stages(path: Path) -> list[str]:
    return re.split(r"^FROM ", path.read_text(), flags=re.M)[1:]


def test_there_are_two_containerfiles() -> None:
    assert [p.name for p in CONTAINERFILES] == ["gateway.Containerfile", "services.Containerfile"]


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_copied_sources_exist(path: Path) -> None:
    for line in path.read_text().splitlines():
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        *sources, _dest = line.split()[1:]
        for source in sources:
            if source.startswith(GENERATED):
                continue
            assert (ROOT / source).exists(), f"{path.name}: {source} does not exist"


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_runtime_stage_is_numeric_non_root(path: Path) -> None:
    runtime = _stages(path)[-1]
    users = re.findall(r"^USER (\S+)", runtime, flags=re.M)
    assert users == ["10001:10001"]
    assert "gcc" not in runtime
    assert "build-essential" not in runtime


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_images_install_exactly_the_lock(path: Path) -> None:
    """The wheels come from requirements/runtime.txt (scripts/download-wheels.sh): pip checks each
    against the lock's hashes and resolves nothing, so an image holds the lock and only that."""
    text = path.read_text().replace("\\\n", " ")
    installs = [line for line in text.splitlines() if '/pip" install' in line]
    assert installs
    for line in installs:
        for flag in ("--no-index", "--require-hashes", "--no-deps"):
            assert flag in line.split(), f"{path.name}: pip install without {flag}"


def test_gateway_image_holds_every_file_envoy_reads() -> None:
    config = (ROOT / "deploy" / "k8s" / "base" / "gateway" / "envoy.yaml").read_text()
    wanted = set(re.findall(r'"(/app/[^"]+)"', config))
    assert wanted
    copied = set()
    for line in (IMAGES / "gateway.Containerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, dest = line.split()[1:]
            for source in sources:
                copied.add(dest + Path(source).name if dest.endswith("/") else dest)
    assert wanted <= copied, sorted(wanted - copied)


def test_sbom_parses_dpkg_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(
        "Package: b\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n"
        "Description: x\n more\n\n"
        "Package: a\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: c\nStatus: install ok installed\nArchitecture: all\nVersion: 3\n"
    )
    assert sbom.debian_packages(status) == [
        {"name": "b", "version": "2", "architecture": "amd64"},
        {"name": "c", "version": "3", "architecture": "all"},
    ]
    assert any(p["name"] == "grpcio" for p in sbom.python_packages())
