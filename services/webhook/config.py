"""Webhook service configuration, read once from the environment at start-up."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import ConfigError, ServiceConfig, env_list, env_str
from services.common.ratelimit import RateLimitConfig
from services.webhook.ssrf import IPNetwork

ALLOW_CIDRS_VARIABLE = "WEBHOOK_ALLOW_CIDRS"


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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebhookConfig:
        service = ServiceConfig.from_env(
            "webhook", default_grpc_port=50053, default_metrics_port=9103, environ=environ
        )
        return cls(
            service=service,
            issuer=env_str("JWT_ISSUER", "catalytic-auth", environ=environ),
            audience=env_str("JWT_AUDIENCE", "catalytic-api", environ=environ),
            allow_cidrs=parse_cidrs(
                ALLOW_CIDRS_VARIABLE, env_list(ALLOW_CIDRS_VARIABLE, [], environ=environ)
            ),
            rate_limits=RateLimitConfig.from_env(environ),
        )
