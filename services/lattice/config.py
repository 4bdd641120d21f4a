"""Lattice service configuration, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.config import ConfigError, ServiceConfig, env_float, env_int, env_str
from services.common.internal_auth import INTERNAL_TOKEN_VARIABLE, InternalToken
from services.common.ports import GRPC_PORTS, METRICS_PORTS, local_addr
from services.common.ratelimit import RateLimitConfig
from services.lattice.engine.compute import ComputeConfig
from services.lattice.outbox import RelaySettings

MiB = 1024 * 1024
DEFAULT_CACHE_BYTES = 256 * MiB
# The gateway's long route timeout: no computation outlives the request that asked for it.
DEFAULT_COMPUTE_DEADLINE_S = 120.0


@dataclass(frozen=True)
class RelayConfig:
    """Where and how the outbox relay publishes events."""

    webhook_addr: str
    # None: INTERNAL_TOKEN is unset; PublishEvent then refuses the relay and events wait.
    internal_token: InternalToken | None = field(repr=False)
    settings: RelaySettings
    publish_timeout_s: float
    # How long sent events stay in the outbox (0: deleted as soon as they are accepted).
    sent_retention_s: float


@dataclass(frozen=True)
class LatticeConfig:
    """Everything the lattice service needs; see docs/operations/configuration.md."""

    service: ServiceConfig
    issuer: str
    audience: str
    # Per-tenant request rate limits by plan (ADR "Abuse limits, on by default").
    rate_limits: RateLimitConfig
    compute: ComputeConfig
    # Bytes of decoded fields kept in process memory (LATTICE_CACHE_BYTES); 0 disables.
    cache_bytes: int
    # The longest any one computation may take, whatever the caller's deadline.
    compute_deadline_s: float
    relay: RelayConfig

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LatticeConfig:
        service = ServiceConfig.from_env(
            "lattice",
            default_grpc_port=GRPC_PORTS["lattice"],
            default_metrics_port=METRICS_PORTS["lattice"],
            environ=environ,
        )
        cache_bytes = env_int("LATTICE_CACHE_BYTES", DEFAULT_CACHE_BYTES, environ=environ)
        if cache_bytes < 0:
            raise ConfigError("environment variable LATTICE_CACHE_BYTES must be at least 0")
        deadline = env_float(
            "LATTICE_COMPUTE_DEADLINE_S", DEFAULT_COMPUTE_DEADLINE_S, environ=environ
        )
        if not deadline > 0:
            raise ConfigError("environment variable LATTICE_COMPUTE_DEADLINE_S must be > 0")
        return cls(
            service=service,
            issuer=env_str("JWT_ISSUER", "catalytic-auth", environ=environ),
            audience=env_str("JWT_AUDIENCE", "catalytic-api", environ=environ),
            rate_limits=RateLimitConfig.from_env(environ),
            compute=ComputeConfig.from_env(environ),
            cache_bytes=cache_bytes,
            compute_deadline_s=deadline,
            relay=_relay_config(environ),
        )


def _positive(name: str, default: float, environ: Mapping[str, str] | None) -> float:
    value = env_float(name, default, environ=environ)
    if not value > 0:
        raise ConfigError(f"environment variable {name} must be > 0")
    return value


def _at_least_zero(name: str, default: float, environ: Mapping[str, str] | None) -> float:
    value = env_float(name, default, environ=environ)
    if not value >= 0:
        raise ConfigError(f"environment variable {name} must be at least 0")
    return value


def _relay_config(environ: Mapping[str, str] | None) -> RelayConfig:
    token: InternalToken | None = None
    if env_str(INTERNAL_TOKEN_VARIABLE, "", environ=environ):
        token = InternalToken.from_env(environ)
    batch = env_int("OUTBOX_BATCH_SIZE", 100, environ=environ)
    if not 1 <= batch <= 1000:
        raise ConfigError("environment variable OUTBOX_BATCH_SIZE must be 1 to 1000")
    base = _positive("OUTBOX_BACKOFF_BASE_S", 1.0, environ)
    cap = _positive("OUTBOX_BACKOFF_MAX_S", 60.0, environ)
    if cap < base:
        raise ConfigError("OUTBOX_BACKOFF_MAX_S must be at least OUTBOX_BACKOFF_BASE_S")
    return RelayConfig(
        webhook_addr=env_str("WEBHOOK_ADDR", local_addr("webhook"), environ=environ),
        internal_token=token,
        settings=RelaySettings(
            poll_interval_s=_positive("OUTBOX_POLL_INTERVAL_S", 1.0, environ),
            batch_size=batch,
            lease_s=_positive("OUTBOX_LEASE_S", 60.0, environ),
            base_backoff_s=base,
            max_backoff_s=cap,
        ),
        publish_timeout_s=_positive("OUTBOX_PUBLISH_TIMEOUT_S", 5.0, environ),
        sent_retention_s=_at_least_zero("OUTBOX_SENT_RETENTION_S", 3600.0, environ),
    )
