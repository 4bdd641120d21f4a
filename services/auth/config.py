"""Auth service configuration, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.config import ConfigError, ServiceConfig, env_int, env_str

PLANS = ("free", "starter", "professional", "enterprise")


@dataclass(frozen=True)
class AuthConfig:
    """Everything the auth service needs; see docs/operations/configuration.md."""

    service: ServiceConfig
    issuer: str
    audience: str
    access_token_ttl_s: int
    refresh_token_ttl_s: int
    keys_dir: Path
    default_plan: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthConfig:
        service = ServiceConfig.from_env(
            "auth", default_grpc_port=50051, default_metrics_port=9101, environ=environ
        )
        access_ttl = env_int("ACCESS_TOKEN_TTL_S", 600, environ=environ)
        if not 300 <= access_ttl <= 900:
            raise ConfigError(f"ACCESS_TOKEN_TTL_S must be 300..900 seconds, got {access_ttl}")
        default_plan = env_str("DEFAULT_PLAN", "free", environ=environ)
        if default_plan not in PLANS:
            raise ConfigError(
                f"DEFAULT_PLAN must be one of {', '.join(PLANS)}, got {default_plan!r}"
            )
        run_dir = Path(env_str("RUN_DIR", ".run", environ=environ))
        return cls(
            service=service,
            issuer=env_str("JWT_ISSUER", "catalytic-auth", environ=environ),
            audience=env_str("JWT_AUDIENCE", "catalytic-api", environ=environ),
            access_token_ttl_s=access_ttl,
            refresh_token_ttl_s=env_int("REFRESH_TOKEN_TTL_S", 30 * 24 * 3600, environ=environ),
            keys_dir=Path(env_str("JWT_KEYS_DIR", str(run_dir / "keys"), environ=environ)),
            default_plan=default_plan,
        )
