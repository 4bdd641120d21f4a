"""Reading configuration from the environment once, at start-up, into frozen dataclasses."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from services.common.ports import local_addr


class ConfigError(Exception):
    """A required variable is missing or a value cannot be parsed; start-up must stop."""


# How long a request waits for the database before it fails with 503 (ADR 44).
DEFAULT_DATABASE_WAIT_S = 3.0

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    # An empty value is treated as unset so `FOO=` in a .env file falls back to the default.
    return value if value else None


def env_str(
    name: str, default: str | None = None, *, environ: Mapping[str, str] | None = None
) -> str:
    """The variable's value, or `default`; ConfigError naming it when missing and no default."""
    value = _raw(name, environ)
    if value is not None:
        return value
    if default is None:
        raise ConfigError(f"missing required environment variable {name}")
    return default


# Operator commands (the admin CLIs, the audit record of a command) connect as the database's
# owner where one is set, else as the application.
ADMIN_DATABASE_UNSET = "set DATABASE_ADMIN_URL (or DATABASE_URL) to the database owner's libpq URL"


def admin_database_url(environ: Mapping[str, str] | None = None) -> str | None:
    """DATABASE_ADMIN_URL, else DATABASE_URL; None when neither is set (ADMIN_DATABASE_UNSET
    says what to do)."""
    return _raw("DATABASE_ADMIN_URL", environ) or _raw("DATABASE_URL", environ)


def _parse(name: str, raw: str, kind: str, parse: Any) -> Any:
    try:
        return parse(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not a valid {kind}") from None


def env_int(
    name: str, default: int | None = None, *, environ: Mapping[str, str] | None = None
) -> int:
    """An integer variable; ConfigError naming variable and value when malformed."""
    raw = _raw(name, environ)
    if raw is None:
        if default is None:
            raise ConfigError(f"missing required environment variable {name}")
        return default
    result: int = _parse(name, raw.strip(), "integer", int)
    return result


def env_float(
    name: str, default: float | None = None, *, environ: Mapping[str, str] | None = None
) -> float:
    """A float variable; ConfigError naming variable and value when malformed."""
    raw = _raw(name, environ)
    if raw is None:
        if default is None:
            raise ConfigError(f"missing required environment variable {name}")
        return default
    result: float = _parse(name, raw.strip(), "number", float)
    return result


def env_bool(
    name: str, default: bool | None = None, *, environ: Mapping[str, str] | None = None
) -> bool:
    """A boolean variable (1/0, true/false, yes/no, on/off, any case)."""
    raw = _raw(name, environ)
    if raw is None:
        if default is None:
            raise ConfigError(f"missing required environment variable {name}")
        return default
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}={raw!r} is not a valid boolean")


def env_list(
    name: str, default: list[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> list[str]:
    """A comma-separated variable as a list, blanks around items and empty items dropped."""
    raw = _raw(name, environ)
    if raw is None:
        if default is None:
            raise ConfigError(f"missing required environment variable {name}")
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def _port(name: str, default: int, environ: Mapping[str, str] | None) -> int:
    port = env_int(name, default, environ=environ)
    if not 0 <= port <= 65535:
        raise ConfigError(f"environment variable {name}={port} is not a port number")
    return port


# `password=...` in a libpq key=value string or in a URL's query string.
_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL (or libpq conninfo) with every password replaced by `***`, safe for logs."""
    if "://" in url:
        parts = urlsplit(url)
        if parts.password is not None:
            userinfo, _, hostinfo = parts.netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            url = urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))
    return _PASSWORD_KV.sub(r"\1***", url)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """What every service needs at boot; each service embeds it in its own frozen config."""

    service_name: str
    grpc_port: int
    metrics_port: int
    # Kept out of repr so that logging the config can never print a password.
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    bind_host: str = "127.0.0.1"
    auth_addr: str = local_addr("auth")
    log_level: str = "INFO"
    log_format: str = "json"
    shutdown_grace_s: float = 10.0
    db_pool_min: int = 1
    db_pool_max: int = 10
    database_wait_s: float = DEFAULT_DATABASE_WAIT_S
    # The commit the image was built from (catalytic_build_info); None: ask git, if any.
    git_sha: str | None = None
    # Keep Redis-backed answers (denylist, roles, lattice metadata) in the replica, kept
    # current by Redis's invalidation feed (ADR 68); LOCAL_CACHES=false asks Redis every time.
    local_caches: bool = True

    @classmethod
    def from_env(
        cls,
        service_name: str,
        *,
        default_grpc_port: int,
        default_metrics_port: int,
        environ: Mapping[str, str] | None = None,
    ) -> ServiceConfig:
        """Reads the shared variables; port variables are prefixed by the service name."""
        prefix = service_name.upper()
        log_format = env_str("LOG_FORMAT", "json", environ=environ).lower()
        if log_format not in ("json", "text"):
            raise ConfigError(f"environment variable LOG_FORMAT={log_format!r} is not json or text")
        log_level = env_str("LOG_LEVEL", "INFO", environ=environ).upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"environment variable LOG_LEVEL={log_level!r} is not a log level")
        pool_min = env_int("DB_POOL_MIN", 1, environ=environ)
        pool_max = env_int("DB_POOL_MAX", 10, environ=environ)
        if not 0 <= pool_min <= pool_max or pool_max < 1:
            raise ConfigError(
                f"DB_POOL_MIN={pool_min} and DB_POOL_MAX={pool_max} need 0 <= min <= max, max >= 1"
            )
        database_wait_s = env_float("DATABASE_WAIT_S", DEFAULT_DATABASE_WAIT_S, environ=environ)
        if not 0 < database_wait_s <= 60:
            raise ConfigError(
                f"environment variable DATABASE_WAIT_S={database_wait_s} is not in (0, 60]"
            )
        grace = env_float("SHUTDOWN_GRACE_S", 10.0, environ=environ)
        if grace < 0:
            raise ConfigError(f"environment variable SHUTDOWN_GRACE_S={grace} is negative")
        return cls(
            service_name=service_name,
            bind_host=env_str("BIND_HOST", "127.0.0.1", environ=environ),
            grpc_port=_port(f"{prefix}_PORT", default_grpc_port, environ),
            metrics_port=_port(f"{prefix}_METRICS_PORT", default_metrics_port, environ),
            database_url=env_str("DATABASE_URL", environ=environ),
            redis_url=env_str("REDIS_URL", environ=environ),
            auth_addr=env_str("AUTH_ADDR", local_addr("auth"), environ=environ),
            log_level=log_level,
            log_format=log_format,
            shutdown_grace_s=grace,
            db_pool_min=pool_min,
            db_pool_max=pool_max,
            database_wait_s=database_wait_s,
            git_sha=env_str("GIT_SHA", "", environ=environ).strip() or None,
            local_caches=env_bool("LOCAL_CACHES", True, environ=environ),
        )

    def redacted(self) -> dict[str, object]:
        """Every setting with passwords masked, for the start-up log line."""
        return {
            "service_name": self.service_name,
            "bind_host": self.bind_host,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "database_url": redact_url(self.database_url),
            "redis_url": redact_url(self.redis_url),
            "auth_addr": self.auth_addr,
            "log_level": self.log_level,
            "log_format": self.log_format,
            "shutdown_grace_s": self.shutdown_grace_s,
            "db_pool_min": self.db_pool_min,
            "db_pool_max": self.db_pool_max,
            "database_wait_s": self.database_wait_s,
            "git_sha": self.git_sha,
            "local_caches": self.local_caches,
        }
