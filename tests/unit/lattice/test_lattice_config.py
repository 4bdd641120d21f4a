"""Lattice service configuration."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.lattice.config import LatticeConfig

BASE = {"DATABASE_URL": "postgresql://app@127.0.0.1/catalytic", "REDIS_URL": "redis://127.0.0.1"}


def test_defaults() -> None:
    config = LatticeConfig.from_env(BASE)
    assert (config.service.service_name, config.service.grpc_port) == ("lattice", 50052)
    assert config.service.metrics_port == 9102
    assert (config.issuer, config.audience) == ("catalytic-auth", "catalytic-api")


def test_overrides() -> None:
    config = LatticeConfig.from_env(
        {**BASE, "LATTICE_PORT": "6000", "LATTICE_METRICS_PORT": "6001", "JWT_AUDIENCE": "aud"}
    )
    assert (config.service.grpc_port, config.service.metrics_port) == (6000, 6001)
    assert config.audience == "aud"


def test_database_url_is_required() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        LatticeConfig.from_env({"REDIS_URL": "redis://127.0.0.1"})
