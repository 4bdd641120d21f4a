"""Configuration is read once from the environment and fails by name."""

from __future__ import annotations

import dataclasses

import pytest

from services.common.config import (
    ConfigError,
    ServiceConfig,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    redact_url,
)

BASE = {"DATABASE_URL": "postgresql://app:s3cret@db:5432/app", "REDIS_URL": "redis://r:6379/0"}


def _from_env(**overrides: str) -> ServiceConfig:
    return ServiceConfig.from_env(
        "auth",
        default_grpc_port=50051,
        default_metrics_port=9101,
        environ={**BASE, **overrides},
    )


def test_defaults() -> None:
    config = _from_env()
    assert config.service_name == "auth"
    assert (config.bind_host, config.grpc_port, config.metrics_port) == ("127.0.0.1", 50051, 9101)
    assert config.auth_addr == "127.0.0.1:50051"
    assert (config.log_level, config.log_format) == ("INFO", "json")
    assert config.shutdown_grace_s == 10.0
    assert (config.db_pool_min, config.db_pool_max) == (1, 10)


def test_service_prefixed_ports_and_overrides() -> None:
    config = _from_env(
        AUTH_PORT="6000", AUTH_METRICS_PORT="0", LOG_FORMAT="TEXT", SHUTDOWN_GRACE_S="2.5"
    )
    assert (config.grpc_port, config.metrics_port) == (6000, 0)
    assert config.log_format == "text"
    assert config.shutdown_grace_s == 2.5


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _from_env().grpc_port = 1  # type: ignore[misc]


@pytest.mark.parametrize("missing", ["DATABASE_URL", "REDIS_URL"])
def test_missing_required_variable_is_named(missing: str) -> None:
    environ = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        ServiceConfig.from_env("auth", default_grpc_port=1, default_metrics_port=2, environ=environ)


def test_malformed_int_names_variable_and_value() -> None:
    with pytest.raises(ConfigError, match=r"AUTH_PORT='fifty'"):
        _from_env(AUTH_PORT="fifty")


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUTH_PORT", "70000"), ("LOG_FORMAT", "xml"), ("LOG_LEVEL", "loud"), ("DB_POOL_MIN", "20")],
)
def test_invalid_values_are_rejected_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        _from_env(**{name: value})


def test_repr_never_shows_passwords() -> None:
    config = _from_env()
    assert "s3cret" not in repr(config)
    assert "s3cret" not in str(config.redacted())


def test_typed_helpers() -> None:
    env = {"N": " 42 ", "F": "0.5", "B": "Yes", "L": "a, b,,c ", "EMPTY": ""}
    assert env_int("N", environ=env) == 42
    assert env_float("F", environ=env) == 0.5
    assert env_bool("B", environ=env) is True
    assert env_bool("MISSING", False, environ=env) is False
    assert env_list("L", environ=env) == ["a", "b", "c"]
    assert env_list("MISSING", [], environ=env) == []
    assert env_str("EMPTY", "fallback", environ=env) == "fallback"
    with pytest.raises(ConfigError, match="MISSING"):
        env_str("MISSING", environ=env)
    with pytest.raises(ConfigError, match=r"F='0.5'"):
        env_int("F", environ=env)
    with pytest.raises(ConfigError, match=r"B='maybe'"):
        env_bool("B", environ={"B": "maybe"})


def test_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALYTIC_TEST_INT", "7")
    assert env_int("CATALYTIC_TEST_INT") == 7


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("redis://:s3cret@r:6379/0", "redis://:***@r:6379/0"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("host=db user=app password=s3cret dbname=app", "host=db user=app password=*** dbname=app"),
        (
            "postgresql://db/app?password=s3cret&sslmode=require",
            "postgresql://db/app?password=***&sslmode=require",
        ),
        ("host=db password='a b' dbname=app", "host=db password=*** dbname=app"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_database_wait_defaults_to_a_few_seconds_and_is_bounded() -> None:
    assert _from_env().database_wait_s == 3.0
    assert _from_env(DATABASE_WAIT_S="0.5").database_wait_s == 0.5
    for bad in ("0", "-1", "61", "soon"):
        with pytest.raises(ConfigError, match="DATABASE_WAIT_S"):
            _from_env(DATABASE_WAIT_S=bad)
