"""WebhookConfig from the environment: allow list, internal token, delivery settings."""

from __future__ import annotations

import ipaddress

import pytest

from services.common.config import ConfigError
from services.webhook.config import (
    DEFAULT_RETRY_SCHEDULE_S,
    DeliveryConfig,
    RetentionConfig,
    WebhookConfig,
)

BASE = {
    "DATABASE_URL": "postgresql://app@127.0.0.1/catalytic",
    "REDIS_URL": "redis://127.0.0.1",
    "INTERNAL_TOKEN": "t" * 43,
}


def test_defaults() -> None:
    config = WebhookConfig.from_env(BASE)
    assert config.allow_cidrs == ()
    assert (config.service.grpc_port, config.service.metrics_port) == (50053, 9103)
    assert (config.issuer, config.audience) == ("catalytic-auth", "catalytic-api")
    assert config.internal_token.matches("t" * 43)
    assert "t" * 43 not in repr(config)
    delivery = config.delivery
    assert delivery == DeliveryConfig()
    assert delivery.retry_schedule_s == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert delivery.retry_schedule_s == DEFAULT_RETRY_SCHEDULE_S
    assert (delivery.connect_timeout_s, delivery.timeout_s) == (5, 15)
    assert delivery.disable_after_s == 5 * 24 * 3600
    assert delivery.secret_overlap_s == 24 * 3600
    assert delivery.retry_jitter == 0.1


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
        WebhookConfig.from_env({"REDIS_URL": "redis://127.0.0.1", "INTERNAL_TOKEN": "t" * 43})


@pytest.mark.parametrize("value", [None, "short"])
def test_the_internal_token_is_required_and_long(value: str | None) -> None:
    environ = {key: item for key, item in BASE.items() if key != "INTERNAL_TOKEN"}
    if value is not None:
        environ["INTERNAL_TOKEN"] = value
    with pytest.raises(ConfigError, match="INTERNAL_TOKEN"):
        WebhookConfig.from_env(environ)


def test_delivery_settings() -> None:
    delivery = DeliveryConfig.from_env(
        {
            "WEBHOOK_RETRY_SCHEDULE_S": "0, 1,2.5",
            "WEBHOOK_RETRY_JITTER": "0",
            "WEBHOOK_ENDPOINT_RATE_PER_S": "0",
            "WEBHOOK_WORKER_CONCURRENCY": "0",
            "WEBHOOK_TIMEOUT_S": "2",
            "WEBHOOK_LEASE_S": "4",
            "WEBHOOK_DISABLE_AFTER_S": "60",
            "WEBHOOK_SECRET_OVERLAP_S": "1.5",
        }
    )
    assert delivery.retry_schedule_s == (0, 1, 2.5)
    assert delivery.retry_jitter == 0
    assert (delivery.endpoint_rate_per_s, delivery.worker_concurrency) == (0, 0)
    # The connect timeout never exceeds the whole attempt's.
    assert (delivery.connect_timeout_s, delivery.timeout_s) == (2, 2)
    assert (delivery.lease_s, delivery.disable_after_s, delivery.secret_overlap_s) == (4, 60, 1.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_RETRY_SCHEDULE_S", "0,-1"),
        ("WEBHOOK_RETRY_SCHEDULE_S", "0,soon"),
        ("WEBHOOK_RETRY_SCHEDULE_S", ",,"),
        ("WEBHOOK_RETRY_SCHEDULE_S", "inf"),
        ("WEBHOOK_RETRY_JITTER", "0.9"),
        ("WEBHOOK_TIMEOUT_S", "0"),
        ("WEBHOOK_LEASE_S", "-1"),
        ("WEBHOOK_WORKER_CONCURRENCY", "-1"),
        ("WEBHOOK_ENDPOINT_RATE_PER_S", "fast"),
    ],
)
def test_bad_delivery_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        DeliveryConfig.from_env({name: value})


def test_retention_defaults_and_settings() -> None:
    default = WebhookConfig.from_env(BASE).retention
    assert default == RetentionConfig()
    assert (default.retention_s, default.interval_s, default.batch) == (30 * 86400, 600, 500)
    assert default.enabled
    short = RetentionConfig.from_env(
        {
            "WEBHOOK_RETENTION_DAYS": "0.5",
            "WEBHOOK_RETENTION_INTERVAL_S": "60",
            "WEBHOOK_RETENTION_BATCH": "100",
        }
    )
    assert (short.retention_s, short.interval_s, short.batch) == (43200, 60, 100)
    assert not RetentionConfig.from_env({"WEBHOOK_RETENTION_DAYS": "0"}).enabled


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_RETENTION_DAYS", "-1"),
        ("WEBHOOK_RETENTION_DAYS", "nan"),
        ("WEBHOOK_RETENTION_DAYS", "a month"),
        ("WEBHOOK_RETENTION_INTERVAL_S", "0"),
        ("WEBHOOK_RETENTION_BATCH", "0"),
    ],
)
def test_bad_retention_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        RetentionConfig.from_env({name: value})
