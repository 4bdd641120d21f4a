"""Webhook service configuration, read once from the environment at start-up."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.config import ConfigError, ServiceConfig, env_float, env_int, env_list, env_str
from services.common.internal_auth import InternalToken
from services.common.keys.config import KekConfig
from services.common.ports import GRPC_PORTS, METRICS_PORTS
from services.common.ratelimit import RateLimitConfig
from services.webhook.ssrf import IPNetwork

ALLOW_CIDRS_VARIABLE = "WEBHOOK_ALLOW_CIDRS"
RETRY_SCHEDULE_VARIABLE = "WEBHOOK_RETRY_SCHEDULE_S"
# Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about 28 hours.
DEFAULT_RETRY_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
FIVE_DAYS_S = 5 * 24 * 3600.0
DAY_S = 24 * 3600.0


def parse_cidrs(name: str, items: list[str]) -> tuple[IPNetwork, ...]:
    """Networks from CIDR strings; ConfigError naming the variable and the bad item."""
    networks: list[IPNetwork] = []
    for item in items:
        try:
            # strict: "10.0.0.1/8" is more likely a typo than a wish to allow all of 10/8.
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ConfigError(
                f"environment variable {name} has a bad CIDR {item!r}: {exc}"
            ) from None
    return tuple(networks)


def parse_schedule(name: str, items: list[str]) -> tuple[float, ...]:
    """Delays in seconds, at least one, each finite and >= 0; ConfigError naming the variable."""
    delays: list[float] = []
    for item in items:
        try:
            delay = float(item)
        except ValueError:
            raise ConfigError(f"environment variable {name} has a bad delay {item!r}") from None
        if not (math.isfinite(delay) and delay >= 0):
            raise ConfigError(f"environment variable {name} has a bad delay {item!r}")
        delays.append(delay)
    if not delays:
        raise ConfigError(f"environment variable {name} needs at least one delay")
    return tuple(delays)


def _positive(name: str, default: float, environ: Mapping[str, str] | None) -> float:
    value = env_float(name, default, environ=environ)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"environment variable {name}={value} must be > 0")
    return value


def _non_negative_int(name: str, default: int, environ: Mapping[str, str] | None) -> int:
    value = env_int(name, default, environ=environ)
    if value < 0:
        raise ConfigError(f"environment variable {name}={value} must be >= 0")
    return value


@dataclass(frozen=True)
class DeliveryConfig:
    """How events are delivered; see docs/api/webhook-system.md for each setting's meaning."""

    # Delay before attempt n+1: [0] before the first, [n] after the n-th failed; its length is
    # the number of attempts before a delivery is DEAD.
    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    # Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter].
    retry_jitter: float = 0.1
    # A receiver's Retry-After (429/503) postpones the retry up to this long.
    retry_after_max_s: float = 3600.0
    # An endpoint whose attempts have failed for this long, with no success, is disabled.
    disable_after_s: float = FIVE_DAYS_S
    # Attempts per second per endpoint (burst the same); 0 means no limit.
    endpoint_rate_per_s: int = 50
    # Deliveries in flight at once in this process; 0 runs no worker (API only).
    worker_concurrency: int = 32
    # A claim lasts this long unless renewed; the worker renews every third of it, so a killed
    # worker's deliveries are sent by another within this time.
    lease_s: float = 10.0
    # Without a wake-up, the worker looks for due deliveries this often.
    poll_interval_s: float = 0.5
    connect_timeout_s: float = 5.0
    # The whole attempt: DNS, connect, TLS, request, and reading the (capped) answer.
    timeout_s: float = 15.0
    # How long a rotated-out secret keeps signing next to the new one.
    secret_overlap_s: float = 24 * 3600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeliveryConfig:
        default = cls()
        jitter = env_float("WEBHOOK_RETRY_JITTER", default.retry_jitter, environ=environ)
        if not 0 <= jitter <= 0.5:
            raise ConfigError(f"environment variable WEBHOOK_RETRY_JITTER={jitter} must be 0..0.5")
        schedule = parse_schedule(
            RETRY_SCHEDULE_VARIABLE,
            env_list(
                RETRY_SCHEDULE_VARIABLE,
                [f"{delay:g}" for delay in default.retry_schedule_s],
                environ=environ,
            ),
        )
        connect_timeout = _positive("WEBHOOK_CONNECT_TIMEOUT_S", default.connect_timeout_s, environ)
        timeout = _positive("WEBHOOK_TIMEOUT_S", default.timeout_s, environ)
        return cls(
            retry_schedule_s=schedule,
            retry_jitter=jitter,
            retry_after_max_s=_positive(
                "WEBHOOK_RETRY_AFTER_MAX_S", default.retry_after_max_s, environ
            ),
            disable_after_s=_positive("WEBHOOK_DISABLE_AFTER_S", default.disable_after_s, environ),
            endpoint_rate_per_s=_non_negative_int(
                "WEBHOOK_ENDPOINT_RATE_PER_S", default.endpoint_rate_per_s, environ
            ),
            worker_concurrency=_non_negative_int(
                "WEBHOOK_WORKER_CONCURRENCY", default.worker_concurrency, environ
            ),
            lease_s=_positive("WEBHOOK_LEASE_S", default.lease_s, environ),
            poll_interval_s=_positive("WEBHOOK_POLL_INTERVAL_S", default.poll_interval_s, environ),
            connect_timeout_s=min(connect_timeout, timeout),
            timeout_s=timeout,
            secret_overlap_s=_positive(
                "WEBHOOK_SECRET_OVERLAP_S", default.secret_overlap_s, environ
            ),
        )


@dataclass(frozen=True)
class RetentionConfig:
    """How long delivery history is kept; see docs/api/webhook-system.md#retention."""

    # Deliveries SUCCEEDED or DEAD this long ago (their attempts with them), and events this
    # old that no delivery refers to any more, are deleted; 0 keeps everything.
    retention_s: float = 30 * DAY_S
    # How often the retention task looks for such rows.
    interval_s: float = 600.0
    # Events looked at, and deleted with their deliveries, per statement.
    batch: int = 500

    @property
    def enabled(self) -> bool:
        return self.retention_s > 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetentionConfig:
        default = cls()
        days = env_float("WEBHOOK_RETENTION_DAYS", default.retention_s / DAY_S, environ=environ)
        if not (math.isfinite(days) and days >= 0):
            raise ConfigError(
                f"environment variable WEBHOOK_RETENTION_DAYS={days} must be >= 0 (0 keeps all)"
            )
        batch = env_int("WEBHOOK_RETENTION_BATCH", default.batch, environ=environ)
        if batch < 1:
            raise ConfigError(f"environment variable WEBHOOK_RETENTION_BATCH={batch} must be >= 1")
        return cls(
            retention_s=days * DAY_S,
            interval_s=_positive("WEBHOOK_RETENTION_INTERVAL_S", default.interval_s, environ),
            batch=batch,
        )


@dataclass(frozen=True)
class WebhookConfig:
    """Everything the webhook service needs; see docs/operations/configuration.md."""

    service: ServiceConfig
    issuer: str
    audience: str
    # Destinations here skip the SSRF refusal and may use plain http (e.g. 127.0.0.0/8 in dev).
    allow_cidrs: tuple[IPNetwork, ...]
    # Per-tenant request rate limits by plan (ADR "Abuse limits, on by default").
    rate_limits: RateLimitConfig
    # What PublishEvent callers must present (services/common/internal_auth.py).
    internal_token: InternalToken
    delivery: DeliveryConfig
    retention: RetentionConfig = RetentionConfig()
    # Where the key-encryption keys that seal the endpoints' secrets are (ADR 56).
    keys: KekConfig = field(default_factory=KekConfig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebhookConfig:
        service = ServiceConfig.from_env(
            "webhook",
            default_grpc_port=GRPC_PORTS["webhook"],
            default_metrics_port=METRICS_PORTS["webhook"],
            environ=environ,
        )
        return cls(
            service=service,
            issuer=env_str("JWT_ISSUER", "catalytic-auth", environ=environ),
            audience=env_str("JWT_AUDIENCE", "catalytic-api", environ=environ),
            allow_cidrs=parse_cidrs(
                ALLOW_CIDRS_VARIABLE, env_list(ALLOW_CIDRS_VARIABLE, [], environ=environ)
            ),
            rate_limits=RateLimitConfig.from_env(environ),
            internal_token=InternalToken.from_env(environ),
            delivery=DeliveryConfig.from_env(environ),
            retention=RetentionConfig.from_env(environ),
            keys=KekConfig.from_env(environ),
        )
