"""The compute backends meet through one contract module (backends.py), never through each
other: the GPU backend imports neither the Router nor the CPU pool, the CPU pool not the
Router, and the contract none of them (no import cycle between them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[4] / "services" / "lattice" / "engine"
PACKAGE = "services.lattice.engine."

# module -> the engine modules it must not import, anywhere in the file (lazy imports too).
FORBIDDEN = {
    "backends": {"compute", "cpu_pool", "cpu_worker", "gpu", "gpu_kernels"},
    "gpu": {"compute", "cpu_pool", "cpu_worker"},
    "cpu_pool": {"compute", "gpu"},
    "cpu_worker": {"compute", "cpu_pool", "gpu"},
}


def engine_imports(module: str) -> set[str]:
    """The engine modules `module` imports, by their short names."""
    tree = ast.parse((ENGINE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(PACKAGE):
                found.add(node.module.removeprefix(PACKAGE))
            elif node.module == PACKAGE.rstrip("."):
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.removeprefix(PACKAGE)
                for alias in node.names
                if alias.name.startswith(PACKAGE)
            )
    return found


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_backends_meet_only_through_the_contract(module: str) -> None:
    assert engine_imports(module) & FORBIDDEN[module] == set()


def test_the_contract_is_what_the_implementations_import() -> None:
    for module in ("compute", "gpu", "cpu_pool"):
        assert "backends" in engine_imports(module), module


# The pure engine: no service module but the domain errors (which the engine will own when it
# becomes a package of its own), no configuration, no environment.
PURE = (
    "analysis",
    "catalytic",
    "field",
    "fills",
    "geometry",
    "memory",
    "path_kernels",
    "paths",
    "shapes",
    "transforms",
)
ALLOWED_OUTSIDE = {"services.common.errors"}


def outside_imports(module: str) -> set[str]:
    tree = ast.parse((ENGINE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        names = (
            [node.module]
            if isinstance(node, ast.ImportFrom) and node.module
            else [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        found.update(
            name
            for name in names
            if name.startswith("services.")
            and not (name.startswith(PACKAGE) or name == PACKAGE.rstrip("."))
        )
    return found


@pytest.mark.parametrize("module", PURE)
def test_the_pure_engine_imports_no_service_module(module: str) -> None:
    assert outside_imports(module) <= ALLOWED_OUTSIDE
    assert "os.environ" not in (ENGINE / f"{module}.py").read_text()
