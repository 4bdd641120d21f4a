"""WEBHOOK_ALLOW_CIDRS parsing."""

from __future__ import annotations

import ipaddress

import pytest

from services.common.config import ConfigError
from services.webhook.config import WebhookConfig

BASE = {"DATABASE_URL": "postgresql://app@127.0.0.1/catalytic", "REDIS_URL": "redis://127.0.0.1"}


def test_defaults() -> None:
    config = WebhookConfig.from_env(BASE)
    assert config.allow_cidrs == ()
    assert (config.service.grpc_port, config.service.metrics_port) == (50053, 9103)
    assert (config.issuer, config.audience) == ("catalytic-auth", "catalytic-api")


def test_allow_cidrs() -> None:
    config = WebhookConfig.from_env(
        {**BASE, "WEBHOOK_ALLOW_CIDRS": " 127.0.0.0/8, ::1/128,,10.1.2.3"}
    )
    assert config.allow_cidrs == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("10.1.2.3/32"),
    )


@pytest.mark.parametrize("value", ["127.0.0.0/33", "localhost", "10.0.0.1/8", "::1/129"])
def test_bad_cidr_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="WEBHOOK_ALLOW_CIDRS"):
        WebhookConfig.from_env({**BASE, "WEBHOOK_ALLOW_CIDRS": value})


def test_database_url_is_required() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        WebhookConfig.from_env({"REDIS_URL": "redis://127.0.0.1"})
