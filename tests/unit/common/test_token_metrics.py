"""catalytic_token_verifications_total: every access token presented counts once, by outcome."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from jose import jwt
from prometheus_client import REGISTRY

from services.auth.keys import KeyRing
from services.auth.tokens import TokenIssuer
from services.common.access_tokens import TOKEN_OUTCOMES, AccessTokenVerifier
from services.common.errors import Unauthenticated, Unavailable
from services.common.interceptors.auth import AuthInterceptor

SERVICE = "tokentest"
ISSUER = "catalytic-auth"
AUDIENCE = "catalytic-api"
USER = "0b6f4a1e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"
TENANT = "7d3c2b1a-0f9e-4d8c-b7a6-958473625140"
METHOD = "/test.Echo/Ok"


class Context:
    """The one part of a grpc.aio context the auth interceptor reads."""

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class Denylist:
    def __init__(self) -> None:
        self.jtis: set[str] = set()
        self.down = False

    async def contains(self, jti: str) -> bool:
        if self.down:
            raise Unavailable("redis down")
        return jti in self.jtis


def counts() -> dict[str, float]:
    return {
        outcome: REGISTRY.get_sample_value(
            "catalytic_token_verifications_total", {"service": SERVICE, "outcome": outcome}
        )
        or 0.0
        for outcome in TOKEN_OUTCOMES
    }


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    return KeyRing.load(tmp_path / "keys")


def interceptor(keys: KeyRing, denylist: Denylist, *, jwks_down: bool = False) -> AuthInterceptor:
    async def fetch() -> Sequence[dict[str, str]]:
        if jwks_down:
            raise ConnectionError("auth is down")
        return keys.jwks()

    verifier = AccessTokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE)
    return AuthInterceptor(
        verifier,
        service=SERVICE,
        public_methods=(),
        denylist=denylist,  # type: ignore[arg-type]
    )


def issue(keys: KeyRing) -> tuple[str, str]:
    issued = TokenIssuer(keys, issuer=ISSUER, audience=AUDIENCE, ttl_s=600).issue(
        user_id=USER, tenant_id=TENANT, role="owner"
    )
    return issued.token, issued.jti


async def present(auth: AuthInterceptor, token: str) -> None:
    async with auth.around(METHOD, Context(token)):  # type: ignore[arg-type]
        pass


async def test_every_outcome_is_exported_before_any_token(keys: KeyRing) -> None:
    interceptor(keys, Denylist())
    for outcome in TOKEN_OUTCOMES:
        assert (
            REGISTRY.get_sample_value(
                "catalytic_token_verifications_total", {"service": SERVICE, "outcome": outcome}
            )
            is not None
        )


async def test_each_presentation_counts_one_outcome(keys: KeyRing) -> None:
    denylist = Denylist()
    auth = interceptor(keys, denylist)
    token, jti = issue(keys)
    before = counts()

    await present(auth, token)  # signature checked
    await present(auth, token)  # from the verified-token cache
    with pytest.raises(Unauthenticated):
        await present(auth, token[:-4] + "AAAA")  # a forged signature
    with pytest.raises(Unauthenticated):
        await present(auth, "not-a-token")

    claims = jwt.get_unverified_claims(token)
    now = int(time.time())
    claims.update(iat=now - 3600, nbf=now - 3600, exp=now - 60)
    stale = jwt.encode(claims, keys.signing.private_pem, "ES256", headers={"kid": keys.signing.kid})
    with pytest.raises(Unauthenticated):
        await present(auth, stale)

    denylist.jtis.add(jti)
    with pytest.raises(Unauthenticated):
        await present(auth, token)
    denylist.down = True
    with pytest.raises(Unavailable):
        await present(auth, token)

    after = counts()
    assert {outcome: after[outcome] - before[outcome] for outcome in TOKEN_OUTCOMES} == {
        "verified": 1,
        "cached": 1,
        "expired": 1,
        "invalid": 2,
        "revoked": 1,
        "unavailable": 1,
    }


async def test_keys_that_cannot_be_fetched_count_as_unavailable(keys: KeyRing) -> None:
    auth = interceptor(keys, Denylist(), jwks_down=True)
    token, _ = issue(keys)
    before = counts()["unavailable"]
    with pytest.raises(Unavailable):
        await present(auth, token)
    assert counts()["unavailable"] == before + 1
