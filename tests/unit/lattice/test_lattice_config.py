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


def test_lattice_defaults() -> None:
    config = LatticeConfig.from_env(BASE)
    assert config.cache_bytes == 256 * 1024 * 1024
    assert config.compute_deadline_s == 120.0
    assert config.relay.webhook_addr == "127.0.0.1:50053"
    assert config.relay.internal_token is None
    assert config.relay.settings.batch_size == 100
    assert config.compute.device in ("auto", "cpu", "gpu")


def test_lattice_overrides() -> None:
    token = "t" * 43
    config = LatticeConfig.from_env(
        {
            **BASE,
            "LATTICE_CACHE_BYTES": "0",
            "LATTICE_COMPUTE_DEADLINE_S": "2.5",
            "WEBHOOK_ADDR": "webhook:50053",
            "INTERNAL_TOKEN": token,
            "OUTBOX_POLL_INTERVAL_S": "0.2",
            "OUTBOX_BACKOFF_MAX_S": "5",
            "COMPUTE_WORKERS": "3",
        }
    )
    assert config.cache_bytes == 0
    assert config.compute_deadline_s == 2.5
    assert config.relay.webhook_addr == "webhook:50053"
    assert config.relay.internal_token is not None
    assert config.relay.internal_token.matches(token)
    assert token not in repr(config)
    assert config.relay.settings.poll_interval_s == 0.2
    assert config.relay.settings.max_backoff_s == 5
    assert config.compute.workers == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LATTICE_CACHE_BYTES", "-1"),
        ("LATTICE_COMPUTE_DEADLINE_S", "0"),
        ("INTERNAL_TOKEN", "short"),
        ("OUTBOX_BATCH_SIZE", "0"),
        ("OUTBOX_BACKOFF_MAX_S", "0.5"),
        ("OUTBOX_POLL_INTERVAL_S", "-1"),
    ],
)
def test_bad_values_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        LatticeConfig.from_env({**BASE, name: value})


def test_sent_retention() -> None:
    assert LatticeConfig.from_env(BASE).relay.sent_retention_s == 3600
    config = LatticeConfig.from_env({**BASE, "OUTBOX_SENT_RETENTION_S": "0"})
    assert config.relay.sent_retention_s == 0
    with pytest.raises(ConfigError, match="OUTBOX_SENT_RETENTION_S"):
        LatticeConfig.from_env({**BASE, "OUTBOX_SENT_RETENTION_S": "-1"})
