"""The locks under requirements/ against pyproject.toml: each requirement pinned within its range,
every entry an exact version with hashes, the locks agreeing with one another, and none of the dev
tools in the runtime lock the images install. `make lock` rewrites them (requirements/README.md)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]

# What the locks are resolved for (the Makefile's UV_COMPILE): Debian 12's CPython 3.11.2 on
# x86-64 Linux, the images' interpreter and a developer's.
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "implementation_name": "cpython",
    "implementation_version": "3.11.2",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}

# The tools that must never reach an image; the dev extra's other names are checked too.
DEV_ONLY = {"pytest", "ruff", "mypy", "hypothesis", "uv", "pip-audit", "pip", "setuptools"}


@dataclass(frozen=True)
class Pin:
    name: NormalizedName
    version: Version
    hashes: tuple[str, ...]


def entries(path: Path) -> list[tuple[str, list[str]]]:
    """Each requirement of a lock with its options (`--hash=...`), continuation lines joined."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split(" --")
        found.append((requirement.strip(), [option.strip() for option in options]))
    return found


def read_lock(name: str) -> dict[NormalizedName, Pin]:
    pins: dict[NormalizedName, Pin] = {}
    for requirement, options in entries(REQUIREMENTS / name):
        parsed = Requirement(requirement)
        (spec,) = parsed.specifier
        hashes = tuple(o.removeprefix("hash=") for o in options if o.startswith("hash="))
        pins[canonicalize_name(parsed.name)] = Pin(
            canonicalize_name(parsed.name), Version(spec.version), hashes
        )
    return pins


def requirements_in(name: str) -> list[Requirement]:
    """The requirements of a `requirements/*.in` file (one per line, `#` comments)."""
    lines = (REQUIREMENTS / name).read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#", 1)[0]) for line in lines if line.split("#", 1)[0].strip()]


def extra(*names: str) -> list[Requirement]:
    return [Requirement(r) for n in names for r in PROJECT["optional-dependencies"][n]]


RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
BUILD_SYSTEM = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
# Each lock and what it must satisfy (the Makefile's `lock` target compiles the same sets).
LOCKS = {
    "runtime.txt": RUNTIME,
    "dev.txt": RUNTIME + extra("dev"),
    "bench.txt": RUNTIME + extra("dev", "bench"),
    "gpu.txt": RUNTIME + extra("gpu"),
    "build.txt": BUILD_SYSTEM + requirements_in("build.in"),
    "checkov.txt": requirements_in("checkov.in"),
}
# A smaller lock constrains a larger one: the packages they share have the same version.
NESTED = [
    ("runtime.txt", "dev.txt"),
    ("runtime.txt", "gpu.txt"),
    ("dev.txt", "bench.txt"),
]


def applies(requirement: Requirement, extras: frozenset[str] = frozenset()) -> bool:
    """Whether a requirement holds on the target, for a dependent that asked for `extras`."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**TARGET, "extra": e}) for e in {"", *extras})


def installed_at(name: str, version: Version) -> metadata.Distribution | None:
    """The distribution in this environment when it is the locked version: its metadata then
    tells the package's own requirements and those of its extras."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    return dist if Version(dist.version) == version else None


def unsatisfied(lock: dict[NormalizedName, Pin], roots: list[Requirement]) -> list[str]:
    """What `roots` need, through every package installed here at its locked version, that the
    lock lacks or pins outside the range."""
    problems = []
    todo = [(root, "pyproject") for root in roots if applies(root)]
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    while todo:
        requirement, wanted_by = todo.pop()
        name = canonicalize_name(requirement.name)
        pin = lock.get(name)
        if pin is None:
            problems.append(f"{requirement} (for {wanted_by}) is not in the lock")
            continue
        if not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement} (for {wanted_by}): the lock pins {pin.version}")
        extras = frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = installed_at(name, pin.version)
        if dist is None:
            continue
        for dependency in map(Requirement, dist.requires or []):
            if applies(dependency, extras):
                todo.append((dependency, f"{name}[{','.join(sorted(extras))}]" if extras else name))
    return problems


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_every_entry_is_an_exact_version_with_hashes(name: str) -> None:
    found = entries(REQUIREMENTS / name)
    assert found, f"{name} is empty"
    names = []
    for requirement, options in found:
        parsed = Requirement(requirement)  # a direct URL or a bare name fails below
        specs = list(parsed.specifier)
        assert len(specs) == 1, f"{name}: {requirement} is not pinned to one version"
        assert specs[0].operator == "==", f"{name}: {requirement} is not pinned with =="
        assert "*" not in specs[0].version, f"{name}: {requirement} is a range"
        assert parsed.url is None, f"{name}: {requirement} is a URL"
        hashes = [o for o in options if o.startswith("hash=sha256:")]
        assert hashes, f"{name}: {requirement} has no --hash=sha256:"
        assert len(hashes) == len(options), f"{name}: {requirement} has options {options}"
        names.append(canonicalize_name(parsed.name))
    assert len(names) == len(set(names)), f"{name} pins a package twice"


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_lock_satisfies_what_it_is_for(name: str) -> None:
    problems = unsatisfied(read_lock(name), LOCKS[name])
    assert not problems, f"requirements/{name} no longer satisfies its inputs (make lock):\n" + (
        "\n".join(problems)
    )


@pytest.mark.parametrize(("small", "large"), NESTED, ids=lambda n: n.removesuffix(".txt"))
def test_the_larger_lock_keeps_the_smaller_ones_versions(small: str, large: str) -> None:
    inner, outer = read_lock(small), read_lock(large)
    differ = {
        name: (pin.version, outer[name].version if name in outer else None)
        for name, pin in inner.items()
        if name not in outer or outer[name].version != pin.version
    }
    assert not differ, f"{small} vs {large}: {differ}"


def test_build_tools_agree_with_the_dev_lock() -> None:
    build, dev = read_lock("build.txt"), read_lock("dev.txt")
    assert {n: p.version for n, p in build.items() if n in dev} == {
        n: dev[n].version for n in build if n in dev
    }


def test_runtime_lock_holds_no_dev_tools() -> None:
    runtime = set(read_lock("runtime.txt"))
    wanted = {canonicalize_name(r.name) for r in RUNTIME}
    others = {canonicalize_name(r.name) for r in extra("dev", "bench", "gpu")} - wanted
    assert not runtime & (others | DEV_ONLY), sorted(runtime & (others | DEV_ONLY))


def test_this_environment_is_the_dev_lock() -> None:
    """`make venv` installs requirements/dev.txt: the tests run on exactly those versions."""
    wrong = {
        name: (str(pin.version), version)
        for name, pin in read_lock("dev.txt").items()
        if (version := _installed_version(name)) != str(pin.version)
    }
    assert not wrong, f"installed versions differ from requirements/dev.txt (make venv): {wrong}"


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_audit_ignores_give_a_reason() -> None:
    for line in (REQUIREMENTS / "audit-ignore.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"\S+\s+#\s*\S.*", line), f"audit-ignore.txt: no reason: {line}"
