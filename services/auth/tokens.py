"""Access tokens (ES256 JWTs) and opaque refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

from services.auth import jws
from services.auth.signing import SigningKeyRing
from services.common.access_tokens import ACCESS_TOKEN_TYPE


@dataclass(frozen=True)
class AccessToken:
    """A signed access token and its lifetime."""

    token: str
    jti: str
    expires_in: int


class TokenIssuer:
    """Signs access tokens with the key ring's newest key."""

    def __init__(self, keys: SigningKeyRing, *, issuer: str, audience: str, ttl_s: int) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._ttl_s = ttl_s

    def issue(self, *, user_id: str, tenant_id: str, role: str) -> AccessToken:
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "tenant_id": tenant_id,
            "role": role,
            "jti": jti,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl_s,
            "typ": ACCESS_TOKEN_TYPE,
        }
        return AccessToken(token=jws.encode(claims, self._keys), jti=jti, expires_in=self._ttl_s)


def new_refresh_token() -> str:
    """256 random bits, URL-safe; only its hash is stored."""
    return "rt_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 hex of a high-entropy token (no salt needed: the token is random)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
