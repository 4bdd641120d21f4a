"""Access tokens: issued by the auth service, verified by every service against JWKS."""

import base64
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest
from jose import jwt

from services.auth.keys import KeyRing, generate_key
from services.auth.tokens import TokenIssuer, hash_token, new_refresh_token
from services.common.access_tokens import AccessTokenVerifier
from services.common.errors import Unauthenticated

# Tokens name users and tenants by UUID (verifiers refuse anything else).
USER = "0b6f4a1e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"
TENANT = "7d3c2b1a-0f9e-4d8c-b7a6-958473625140"

ISSUER = "catalytic-auth"
AUDIENCE = "catalytic-api"


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    return KeyRing.load(tmp_path / "keys")


def verifier_for(keys: KeyRing, *, audience: str = AUDIENCE) -> AccessTokenVerifier:
    async def fetch() -> Sequence[dict[str, str]]:
        return keys.jwks()

    return AccessTokenVerifier(fetch, issuer=ISSUER, audience=audience)


def issuer_for(keys: KeyRing, ttl_s: int = 600) -> TokenIssuer:
    return TokenIssuer(keys, issuer=ISSUER, audience=AUDIENCE, ttl_s=ttl_s)


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_issued_token_verifies_with_all_claims(keys: KeyRing) -> None:
    token = issuer_for(keys).issue(user_id=USER, tenant_id=TENANT, role="owner")
    header = jwt.get_unverified_header(token.token)
    assert header["alg"] == "ES256"
    assert header["kid"] == keys.signing.kid
    claims = jwt.get_unverified_claims(token.token)
    assert set(claims) >= {"iss", "aud", "sub", "tenant_id", "role", "jti", "iat", "nbf", "exp"}
    assert claims["typ"] == "access"
    assert claims["exp"] - claims["iat"] == 600
    principal = await verifier_for(keys).verify(token.token)
    assert (principal.user_id, principal.tenant_id, principal.role) == (USER, TENANT, "owner")
    assert principal.token_id == token.jti


async def test_wrong_audience_is_refused(keys: KeyRing) -> None:
    token = issuer_for(keys).issue(user_id=USER, tenant_id=TENANT, role="owner")
    with pytest.raises(Unauthenticated):
        await verifier_for(keys, audience="someone-else").verify(token.token)


async def test_alg_none_and_hs256_are_refused(keys: KeyRing) -> None:
    claims = jwt.get_unverified_claims(
        issuer_for(keys).issue(user_id=USER, tenant_id=TENANT, role="owner").token
    )
    unsigned = f"{b64({'alg': 'none', 'kid': keys.signing.kid})}.{b64(claims)}."
    with pytest.raises(Unauthenticated):
        await verifier_for(keys).verify(unsigned)
    # The classic confusion attack: HMAC "signed" with the public key as the secret.
    public = json.dumps(keys.jwks()[0])
    forged = jwt.encode(claims, public, algorithm="HS256", headers={"kid": keys.signing.kid})
    with pytest.raises(Unauthenticated):
        await verifier_for(keys).verify(forged)


async def test_tampered_payload_is_refused(keys: KeyRing) -> None:
    token = issuer_for(keys).issue(user_id=USER, tenant_id=TENANT, role="owner").token
    head, _, sig = token.split(".")
    claims = jwt.get_unverified_claims(token)
    claims["tenant_id"] = "t2"
    with pytest.raises(Unauthenticated):
        await verifier_for(keys).verify(f"{head}.{b64(claims)}.{sig}")


async def test_expired_token_is_refused(keys: KeyRing) -> None:
    claims = jwt.get_unverified_claims(
        issuer_for(keys).issue(user_id=USER, tenant_id=TENANT, role="owner").token
    )
    claims.update(iat=int(time.time()) - 3600, nbf=int(time.time()) - 3600)
    claims["exp"] = int(time.time()) - 60
    stale = jwt.encode(claims, keys.signing.private_pem, "ES256", headers={"kid": keys.signing.kid})
    with pytest.raises(Unauthenticated):
        await verifier_for(keys).verify(stale)


async def test_rotated_key_is_fetched_on_unknown_kid(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    ring = {"now": KeyRing.load(keys_dir)}

    async def fetch() -> Sequence[dict[str, str]]:
        return ring["now"].jwks()

    verifier = AccessTokenVerifier(
        fetch, issuer=ISSUER, audience=AUDIENCE, min_refetch_interval_s=0
    )
    first = issuer_for(ring["now"]).issue(user_id=USER, tenant_id=TENANT, role="owner").token
    await verifier.verify(first)
    new_path = generate_key(keys_dir)
    new_path.rename(keys_dir / "zz-rotated.pem")
    ring["now"] = KeyRing.load(keys_dir)
    assert ring["now"].signing.kid == "zz-rotated"
    assert len(ring["now"].jwks()) == 2
    second = issuer_for(ring["now"]).issue(user_id=USER, tenant_id=TENANT, role="owner").token
    await verifier.verify(second)
    await verifier.verify(first)


def test_refresh_tokens_are_random_and_hashed() -> None:
    a, b = new_refresh_token(), new_refresh_token()
    assert a != b
    assert len(a) >= 43
    assert hash_token(a) != a
    assert len(hash_token(a)) == 64


def test_keys_are_written_private(tmp_path: Path) -> None:
    path = generate_key(tmp_path / "k")
    assert path.stat().st_mode & 0o077 == 0


def signed(keys: KeyRing, **changes: object) -> str:
    """A genuine token with `changes` to its claims, signed with the real key."""
    token = issuer_for(keys).issue(user_id=USER, tenant_id=TENANT, role="owner").token
    claims = {**jwt.get_unverified_claims(token), **changes}
    return str(
        jwt.encode(claims, keys.signing.private_pem, "ES256", headers={"kid": keys.signing.kid})
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"tenant_id": "not-a-uuid"},
        {"tenant_id": 42},
        {"tenant_id": TENANT.upper()},
        {"tenant_id": "{" + TENANT + "}"},
        {"sub": "admin"},
        {"sub": ""},
        # iat relative to when the test runs (parameters are built at collection, minutes before)
        {"iat_ahead_s": 3600},
        {"iat_ahead_s": 120},  # twice MAX_IAT_SKEW_S
    ],
    ids=[
        "tenant_id-not-a-uuid",
        "tenant_id-a-number",
        "tenant_id-upper-case",
        "tenant_id-braced",
        "sub-a-name",
        "sub-empty",
        "iat-an-hour-ahead",
        "iat-two-minutes-ahead",
    ],
)
async def test_a_genuinely_signed_token_with_a_bad_id_or_future_iat_is_refused(
    keys: KeyRing, changes: dict[str, object]
) -> None:
    claims = dict(changes)
    if "iat_ahead_s" in claims:
        claims["iat"] = int(time.time()) + cast(int, claims.pop("iat_ahead_s"))
    with pytest.raises(Unauthenticated):
        await verifier_for(keys).verify(signed(keys, **claims))


async def test_an_iat_a_little_ahead_is_clock_skew_and_accepted(keys: KeyRing) -> None:
    principal = await verifier_for(keys).verify(signed(keys, iat=int(time.time()) + 30))
    assert principal.tenant_id == TENANT
