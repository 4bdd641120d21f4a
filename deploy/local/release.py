"""An earlier release's services images, built from git history with today's image recipe.

A rollback goes back to the images the previous release shipped. Ours were first built in the
release that added deploy/images/, so older releases never had images: this builds them now,
from the release's own code, migrations and protos (`git archive`), with the current
Containerfile and wheels (the recipe is tooling, not the release's content). The gateway image is
not rebuilt: `changed_since` tells whether the gateway's inputs differ between the two releases.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

from deploy.local import podman

REPO = Path(__file__).resolve().parents[2]
RELEASES = REPO / ".cache" / "releases"
SERVICES = ("auth", "lattice", "webhook")
# What the services Containerfile copies from outside the release's own tree.
BUILD_INPUTS = ("deploy/images", ".cache/images")
GATEWAY_INPUTS = ("protos", "gateway", "deploy/k8s/base/gateway", "docs/api/openapi.json")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def short_sha(ref: str) -> str:
    return git("rev-parse", "--short", f"{ref}^{{commit}}")


def previous_schema_release() -> str:
    """The last commit before the newest migration: the release that ran on the older schema."""
    added = git("log", "--diff-filter=A", "--format=%H", "-n", "1", "--", "migrations/*.sql")
    if not added:
        raise SystemExit("deploy-local: no migration in the git history")
    return short_sha(f"{added}^")


def changed_since(ref: str, paths: tuple[str, ...] = GATEWAY_INPUTS) -> list[str]:
    """Files under `paths` that differ between `ref` and the working tree's HEAD."""
    return [line for line in git("diff", "--name-only", ref, "HEAD", "--", *paths).splitlines()]


def export(ref: str, destination: Path) -> None:
    """The release's tracked files (no history, no untracked files) into `destination`."""
    with tempfile.TemporaryFile() as archive:
        subprocess.run(["git", "archive", ref], cwd=REPO, stdout=archive, check=True)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            tar.extractall(destination, filter="data")


def generate_stubs(tree: Path) -> None:
    """The release's Python stubs from its own protos (what its `make protos` would write)."""
    out = tree / "gen" / "python"
    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p) for p in (tree / "protos" / "catalytic").rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{tree / 'protos'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ],
        check=True,
    )


def source_tree(sha: str) -> Path:
    """The release's files with its generated stubs, under .cache/releases/<sha> (made once:
    its smoke suite runs from there, and its images are built from there)."""
    tree = RELEASES / sha
    if not (tree / "gen" / "python").is_dir():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        export(sha, tree)
        generate_stubs(tree)
    return tree


def build_services_images(ref: str) -> str:
    """catalytic/{services,auth,lattice,webhook}:<sha of ref>; the tag. Cached by tag."""
    sha = short_sha(ref)
    tree = source_tree(sha)
    wanted = [f"localhost/catalytic/{name}:{sha}" for name in ("services", *SERVICES)]
    if all(podman.image_exists(image) for image in wanted):
        print(f"release {sha}: images exist", flush=True)
        return sha
    if not (REPO / ".cache" / "images" / "wheels").is_dir():
        raise SystemExit("deploy-local: no wheels in .cache/images; run `make images` first")
    for item in BUILD_INPUTS:
        source, target = REPO / item, tree / item
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Hard links: the wheels are 137 MB; a podman build context cannot follow symlinks out.
        shutil.copytree(source, target, copy_function=_link_or_copy)
    with (tree / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    build = [
        "build",
        "--quiet",
        "--layers",
        "--build-arg",
        f"GIT_SHA={sha}",
        "--build-arg",
        f"VERSION={version}",
        "--build-arg",
        "BASE=catalytic/base:bookworm",
    ]
    containerfile = tree / "deploy" / "images" / "services.Containerfile"
    podman.run(
        [*build, "-f", str(containerfile), "-t", f"catalytic/services:{sha}", str(tree)],
        timeout=900,
    )
    for service in SERVICES:
        recipe = f'FROM catalytic/services:{sha}\nCMD ["python", "-m", "services.{service}"]\n'
        podman.run(
            [*build, "-f", "-", "-t", f"catalytic/{service}:{sha}", str(tree)],
            stdin=recipe.encode(),
            timeout=300,
        )
    print(f"release {sha}: built catalytic/{{services,{','.join(SERVICES)}}}:{sha}", flush=True)
    return sha


def _link_or_copy(source: str, target: str) -> None:
    try:
        Path(target).hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)
