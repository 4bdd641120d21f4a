"""Lattice service configuration, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import ServiceConfig, env_str
from services.common.ratelimit import RateLimitConfig


@dataclass(frozen=True)
class LatticeConfig:
    """Everything the lattice service needs; see docs/operations/configuration.md."""

    service: ServiceConfig
    issuer: str
    audience: str
    # Per-tenant request rate limits by plan (ADR "Abuse limits, on by default").
    rate_limits: RateLimitConfig

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LatticeConfig:
        service = ServiceConfig.from_env(
            "lattice", default_grpc_port=50052, default_metrics_port=9102, environ=environ
        )
        return cls(
            service=service,
            issuer=env_str("JWT_ISSUER", "catalytic-auth", environ=environ),
            audience=env_str("JWT_AUDIENCE", "catalytic-api", environ=environ),
            rate_limits=RateLimitConfig.from_env(environ),
        )
