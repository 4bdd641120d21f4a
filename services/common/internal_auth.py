"""Service-to-service authentication: a shared secret sent as `x-internal-token` metadata.

Internal RPCs (WebhookService.PublishEvent) are never routed by the gateway and accept only this
token; it is one secret for the whole deployment (`INTERNAL_TOKEN`, a Kubernetes Secret), so
anything holding it may act for any tenant on those RPCs and nothing else.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.config import ConfigError, env_str
from services.common.context import Principal

INTERNAL_TOKEN_VARIABLE = "INTERNAL_TOKEN"  # noqa: S105 (a variable name)
METADATA_KEY = "x-internal-token"
AUTH_METHOD_INTERNAL = "internal"
# 32 characters of a random token carry far more than the 128 bits a shared secret needs; a
# shorter value is more likely a placeholder than a secret.
MIN_TOKEN_LENGTH = 32
SERVICE_PRINCIPAL = Principal(
    user_id="service", tenant_id="", role="service", auth_method=AUTH_METHOD_INTERNAL
)


def generate_internal_token() -> str:
    """A fresh token: 32 random bytes, base64url (43 characters)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class InternalToken:
    """The deployment's shared service secret; compared in constant time, never printed."""

    value: str = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.value) < MIN_TOKEN_LENGTH or not self.value.isascii():
            raise ValueError(f"an internal token is at least {MIN_TOKEN_LENGTH} ASCII characters")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InternalToken:
        """INTERNAL_TOKEN, required; ConfigError naming it when missing or too short."""
        value = env_str(INTERNAL_TOKEN_VARIABLE, environ=environ)
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(
                f"environment variable {INTERNAL_TOKEN_VARIABLE} must be at least"
                f" {MIN_TOKEN_LENGTH} ASCII characters (e.g. `openssl rand -base64 32`)"
            ) from None

    def matches(self, presented: str) -> bool:
        """True when `presented` is the token; the time taken does not depend on where they
        differ."""
        return hmac.compare_digest(presented.encode("utf-8"), self.value.encode("utf-8"))

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata a caller sends with an internal RPC."""
        return ((METADATA_KEY, self.value),)
