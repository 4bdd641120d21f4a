"""Local verification of access tokens against the auth service's published keys (JWKS)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from jose import jwt
from jose.exceptions import ExpiredSignatureError, JOSEError
from prometheus_client import Counter

from services.common.context import AUTH_METHOD_JWT, Principal
from services.common.errors import Unauthenticated, Unavailable

# Asymmetric algorithms only: never "none", never HS* (a public key must not verify as a secret).
ALLOWED_ALGORITHMS = ("ES256",)
ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - the `typ` claim, not a secret
REQUIRED_CLAIMS = ("iss", "aud", "sub", "tenant_id", "role", "jti", "iat", "nbf", "exp", "typ")

_JOSE_REQUIRED = ("aud", "iat", "exp", "nbf", "iss", "sub", "jti")
# Clock skew tolerated on exp/nbf; a revoked token stays denylisted this much past its exp.
DEFAULT_LEEWAY_S = 5
# How far in the future `iat` may lie (ADR 45): the clocks of the auth replicas and the
# verifiers may drift apart a little; a token issued later than that was not issued by a
# healthy auth service (or its clock is broken, which would stretch the token's lifetime).
MAX_IAT_SKEW_S = 60
# Claims the services use as PostgreSQL uuid values (and as rate-limit and cache keys): only
# the canonical spelling auth writes, so that one tenant has one key and a query never fails
# on a malformed id.
UUID_CLAIMS = ("sub", "tenant_id")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

JwksFetcher = Callable[[], Awaitable[Sequence[dict[str, str]]]]
# Tokens verified once are remembered (bounded) until they expire: a client sends the same
# token on every call, and an ES256 verification costs more than the rest of a light RPC.
DEFAULT_CACHE_SIZE = 10_000

# What became of an access token presented to a service (AuthInterceptor counts each once):
# verified (signature checked now), cached (accepted from the verified-token cache), expired,
# invalid (anything else wrong with it), revoked (denylisted), unavailable (keys or the
# denylist could not be read).
TOKEN_OUTCOMES = ("verified", "cached", "expired", "invalid", "revoked", "unavailable")
TOKEN_VERIFICATIONS = Counter(
    "catalytic_token_verifications_total",
    "Access tokens presented to the service, by outcome: verified, cached (the verified-token"
    " cache answered), expired, invalid, revoked or unavailable (keys or denylist unreadable).",
    ["service", "outcome"],
)


class ExpiredToken(Unauthenticated):
    """The token was valid once; its `exp` (plus leeway) has passed."""


class AccessTokenVerifier:
    """Verifies signature, algorithm, issuer, audience, times and type; caches keys by kid.

    An unknown `kid` triggers one re-fetch (rate-limited), so rotated keys are picked up
    without a restart and a flood of forged kids cannot hammer the auth service.

    `sub` and `tenant_id` must be canonical UUIDs and `iat` at most MAX_IAT_SKEW_S ahead of
    the clock; these are checked before a token is remembered, so the cache never holds one
    that fails them.

    A token that verified is remembered, keyed by its SHA-256, with the claims it proved, and
    accepted from memory until its `exp` (plus leeway) passes; `nbf` is checked on every use.
    Only valid tokens are remembered (a forged token costs a full verification every time),
    at most `cache_size` of them, oldest first out; a key that disappears from the JWKS takes
    its tokens with it. Revocation is not cached: the caller checks the denylist every time.
    """

    def __init__(
        self,
        fetch_jwks: JwksFetcher,
        *,
        issuer: str,
        audience: str,
        leeway_s: int = DEFAULT_LEEWAY_S,
        min_refetch_interval_s: float = 5.0,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch_jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._min_refetch_interval_s = min_refetch_interval_s
        self._keys: dict[str, dict[str, str]] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._cache_size = cache_size
        self._clock = clock
        # sha256(token) -> (kid, not-before, the verified principal); insertion order = age.
        self._verified: dict[bytes, tuple[str, float, Principal]] = {}

    async def verify(self, token: str) -> Principal:
        """The caller the token names; Unauthenticated (ExpiredToken once it has expired) for
        anything short of a valid token, Unavailable when the keys cannot be fetched."""
        principal, _ = await self.check(token)
        return principal

    async def check(self, token: str) -> tuple[Principal, bool]:
        """verify(), and whether the verified-token cache answered (True) or the signature was
        checked now (False)."""
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._verified.get(digest)
        if hit is not None:
            kid, not_before, principal = hit
            now = self._clock()
            if kid in self._keys and not_before - self._leeway_s <= now:
                if now <= principal.expires_at + self._leeway_s:
                    return principal, True
                del self._verified[digest]
        principal, kid, not_before = await self._verify_signed(token)
        self._remember(digest, kid, not_before, principal)
        return principal, False

    def _remember(self, digest: bytes, kid: str, not_before: float, principal: Principal) -> None:
        if self._cache_size <= 0:
            return
        while len(self._verified) >= self._cache_size:
            del self._verified[next(iter(self._verified))]
        self._verified[digest] = (kid, not_before, principal)

    async def _verify_signed(self, token: str) -> tuple[Principal, str, float]:
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError as exc:
            raise Unauthenticated("malformed access token") from exc
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise Unauthenticated("access token algorithm not accepted")
        kid = str(header.get("kid", ""))
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "leeway": self._leeway_s,
                    **{f"require_{c}": True for c in _JOSE_REQUIRED},
                },
            )
        except ExpiredSignatureError as exc:
            raise ExpiredToken("access token is invalid or expired") from exc
        except JOSEError as exc:
            raise Unauthenticated("access token is invalid or expired") from exc
        missing = [name for name in REQUIRED_CLAIMS if name not in claims]
        if missing:
            raise Unauthenticated(f"access token lacks claims: {', '.join(missing)}")
        if claims["typ"] != ACCESS_TOKEN_TYPE:
            raise Unauthenticated("not an access token")
        for name in UUID_CLAIMS:
            value = claims[name]
            if not isinstance(value, str) or not _CANONICAL_UUID.fullmatch(value):
                raise Unauthenticated(f"access token claim {name} is not a UUID")
        # python-jose checks only that iat is a number. The real clock, as jose uses for
        # exp and nbf (the injected one is the cache's).
        if float(claims["iat"]) > time.time() + MAX_IAT_SKEW_S:
            raise Unauthenticated("access token issued in the future")
        principal = Principal(
            user_id=str(claims["sub"]),
            tenant_id=str(claims["tenant_id"]),
            role=str(claims["role"]),
            auth_method=AUTH_METHOD_JWT,
            token_id=str(claims["jti"]),
            expires_at=float(claims["exp"]),
        )
        return principal, kid, float(claims["nbf"])

    async def _key(self, kid: str) -> dict[str, str]:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and self._may_refetch():
                await self._refresh()
        if kid not in self._keys:
            raise Unauthenticated("access token signed by an unknown key")
        return self._keys[kid]

    def _may_refetch(self) -> bool:
        return time.monotonic() - self._fetched_at >= self._min_refetch_interval_s

    async def _refresh(self) -> None:
        try:
            keys = await self._fetch()
        except Exception as exc:
            raise Unavailable("cannot fetch token verification keys") from exc
        self._fetched_at = time.monotonic()
        self._keys = {key["kid"]: dict(key) for key in keys if key.get("kid")}
