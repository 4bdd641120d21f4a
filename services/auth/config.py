"""Auth service configuration, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.auth.lockout import LockoutPolicy
from services.auth.signing import SigningKeyRing
from services.common.config import ConfigError, ServiceConfig, env_float, env_int, env_str
from services.common.keys.token import Pkcs11Settings
from services.common.plans import PLANS
from services.common.ports import GRPC_PORTS, METRICS_PORTS
from services.common.ratelimit import Rate, RateLimitConfig, env_rate

KEY_PROVIDERS = ("file", "pkcs11")


@dataclass(frozen=True)
class SigningKeyConfig:
    """JWT_KEY_PROVIDER and its settings; docs/operations/configuration.md#auth."""

    provider: str = "file"
    # file: the directory of <kid>.pem files.
    directory: Path = Path(".run/keys")
    # pkcs11: the token (PKCS11_*), shared in form with the webhook's KEK provider.
    token: Pkcs11Settings | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SigningKeyConfig:
        provider = env_str("JWT_KEY_PROVIDER", "file", environ=environ)
        if provider not in KEY_PROVIDERS:
            raise ConfigError(
                f"JWT_KEY_PROVIDER must be one of {', '.join(KEY_PROVIDERS)}, got {provider!r}"
            )
        run_dir = Path(env_str("RUN_DIR", ".run", environ=environ))
        directory = Path(env_str("JWT_KEYS_DIR", str(run_dir / "keys"), environ=environ))
        if provider == "file":
            return cls(provider=provider, directory=directory)
        token = Pkcs11Settings.from_env(environ, needed_by="JWT_KEY_PROVIDER=pkcs11")
        return cls(provider=provider, directory=directory, token=token)


def open_signing_keys(config: SigningKeyConfig, *, generate_if_empty: bool) -> SigningKeyRing:
    """The provider's ring, opened (an HSM session logged in).

    PEM files: with `generate_if_empty`, an empty directory gets a new key (development). A
    token is never filled at start-up: replicas starting together would each make a key.
    """
    if config.token is not None:
        # Imported here: the file provider (development) needs no PKCS#11 library loaded.
        from services.auth.hsm_keys import Pkcs11KeyRing

        return Pkcs11KeyRing(config.token)
    from services.auth.keys import KeyRing

    return KeyRing.load(config.directory, generate_if_empty=generate_if_empty)


@dataclass(frozen=True)
class AuthConfig:
    """Everything the auth service needs; see docs/operations/configuration.md."""

    service: ServiceConfig
    issuer: str
    audience: str
    access_token_ttl_s: int
    refresh_token_ttl_s: int
    signing_keys: SigningKeyConfig
    default_plan: str
    # Abuse limits (ADR "Abuse limits, on by default"): per client address, per tenant, per
    # account.
    rate_limits: RateLimitConfig
    register_rate: Rate
    login_rate: Rate
    refresh_rate: Rate
    lockout: LockoutPolicy
    # How long an invitation token works (INVITATION_TTL_S).
    invitation_ttl_s: int = 7 * 24 * 3600

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthConfig:
        service = ServiceConfig.from_env(
            "auth",
            default_grpc_port=GRPC_PORTS["auth"],
            default_metrics_port=METRICS_PORTS["auth"],
            environ=environ,
        )
        access_ttl = env_int("ACCESS_TOKEN_TTL_S", 600, environ=environ)
        if not 300 <= access_ttl <= 900:
            raise ConfigError(f"ACCESS_TOKEN_TTL_S must be 300..900 seconds, got {access_ttl}")
        default_plan = env_str("DEFAULT_PLAN", "free", environ=environ)
        if default_plan not in PLANS:
            raise ConfigError(
                f"DEFAULT_PLAN must be one of {', '.join(PLANS)}, got {default_plan!r}"
            )
        invitation_ttl = env_int("INVITATION_TTL_S", 7 * 24 * 3600, environ=environ)
        if not 300 <= invitation_ttl <= 30 * 24 * 3600:
            raise ConfigError(
                f"INVITATION_TTL_S must be 300..2592000 seconds (30 days), got {invitation_ttl}"
            )
        rate_limits = RateLimitConfig.from_env(environ)
        scale = rate_limits.multiplier
        return cls(
            service=service,
            issuer=env_str("JWT_ISSUER", "catalytic-auth", environ=environ),
            audience=env_str("JWT_AUDIENCE", "catalytic-api", environ=environ),
            access_token_ttl_s=access_ttl,
            refresh_token_ttl_s=env_int("REFRESH_TOKEN_TTL_S", 30 * 24 * 3600, environ=environ),
            signing_keys=SigningKeyConfig.from_env(environ),
            default_plan=default_plan,
            rate_limits=rate_limits,
            register_rate=env_rate(
                "RATE_LIMIT_REGISTER_PER_HOUR", 10, 3600, multiplier=scale, environ=environ
            ),
            login_rate=env_rate(
                "RATE_LIMIT_LOGIN_PER_MINUTE", 30, 60, multiplier=scale, environ=environ
            ),
            refresh_rate=env_rate(
                "RATE_LIMIT_REFRESH_PER_MINUTE", 60, 60, multiplier=scale, environ=environ
            ),
            lockout=_lockout_policy(environ),
            invitation_ttl_s=invitation_ttl,
        )


def _lockout_policy(environ: Mapping[str, str] | None) -> LockoutPolicy:
    defaults = LockoutPolicy()
    try:
        return LockoutPolicy(
            threshold=env_int("LOGIN_LOCKOUT_THRESHOLD", defaults.threshold, environ=environ),
            base_s=env_float("LOGIN_LOCKOUT_BASE_S", defaults.base_s, environ=environ),
            max_s=env_float("LOGIN_LOCKOUT_MAX_S", defaults.max_s, environ=environ),
            window_s=env_float("LOGIN_LOCKOUT_WINDOW_S", defaults.window_s, environ=environ),
        )
    except ValueError as exc:
        raise ConfigError(f"LOGIN_LOCKOUT_* settings: {exc}") from None
