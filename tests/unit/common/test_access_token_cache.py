"""The verified-token cache: fast for the token a client repeats, never looser than verifying."""

import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from jose import jwt

from services.auth.keys import KeyRing, generate_key
from services.auth.tokens import TokenIssuer
from services.common import access_tokens
from services.common.access_tokens import AccessTokenVerifier
from services.common.errors import Unauthenticated

ISSUER = "catalytic-auth"
AUDIENCE = "catalytic-api"
# Tokens name users and tenants by UUID (the verifier refuses anything else).
USER = "0b6f4a1e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"
TENANT = "7d3c2b1a-0f9e-4d8c-b7a6-958473625140"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Ring:
    """A JWKS source whose published keys the test can change."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys
        self.fetches = 0

    async def fetch(self) -> Sequence[dict[str, str]]:
        self.fetches += 1
        return self.keys.jwks()


def issue(keys: KeyRing, ttl_s: int = 600, tenant: str = TENANT) -> str:
    issuer = TokenIssuer(keys, issuer=ISSUER, audience=AUDIENCE, ttl_s=ttl_s)
    return issuer.issue(user_id=USER, tenant_id=tenant, role="owner").token


def verifier(ring: Ring, clock: Clock, **kwargs: int) -> AccessTokenVerifier:
    return AccessTokenVerifier(
        ring.fetch,
        issuer=ISSUER,
        audience=AUDIENCE,
        min_refetch_interval_s=0,
        clock=clock,
        **kwargs,
    )


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    return KeyRing.load(tmp_path / "keys")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts full signature verifications."""
    calls: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: object, **kwargs: object) -> object:
        calls.append(token)
        return real(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(access_tokens.jwt, "decode", counting)
    return calls


async def test_a_repeated_token_is_verified_once(keys: KeyRing, decodes: list[str]) -> None:
    token = issue(keys)
    clock = Clock(jwt.get_unverified_claims(token)["iat"])
    check = verifier(Ring(keys), clock)
    first = await check.verify(token)
    second = await check.verify(token)
    assert second == first
    assert first.tenant_id == TENANT
    assert decodes == [token]


async def test_the_cache_declines_a_token_past_its_exp(keys: KeyRing, decodes: list[str]) -> None:
    token = issue(keys, ttl_s=60)
    exp = jwt.get_unverified_claims(token)["exp"]
    clock = Clock(exp - 30)
    check = verifier(Ring(keys), clock)
    await check.verify(token)
    await check.verify(token)
    assert len(decodes) == 1
    clock.now = exp + access_tokens.DEFAULT_LEEWAY_S + 1
    # Past exp + leeway (by the cache's clock) the entry is not used: full verification decides
    # (by the real clock, under which this token is still valid).
    await check.verify(token)
    assert len(decodes) == 2


async def test_a_cached_token_is_not_accepted_before_nbf(keys: KeyRing) -> None:
    token = issue(keys)
    nbf = jwt.get_unverified_claims(token)["nbf"]
    clock = Clock(nbf)
    check = verifier(Ring(keys), clock)
    await check.verify(token)
    clock.now = nbf - access_tokens.DEFAULT_LEEWAY_S - 60
    # The cache declines; full verification (real clock) decides, and today the token is valid.
    assert (await check.verify(token)).tenant_id == TENANT


async def test_a_retired_key_takes_its_cached_tokens_with_it(
    tmp_path: Path, decodes: list[str]
) -> None:
    keys_dir = tmp_path / "keys"
    old_keys = KeyRing.load(keys_dir)
    ring = Ring(old_keys)
    old_token = issue(old_keys)
    clock = Clock(jwt.get_unverified_claims(old_token)["iat"])
    check = verifier(ring, clock)
    await check.verify(old_token)
    # Rotate and retire: only the new key is published from now on.
    new_dir = tmp_path / "new-keys"
    new_dir.mkdir()
    generate_key(new_dir)
    ring.keys = KeyRing.load(new_dir)
    await check.verify(issue(ring.keys))  # unknown kid: the verifier refetches the JWKS
    with pytest.raises(Unauthenticated, match="unknown key"):
        await check.verify(old_token)
    shutil.rmtree(new_dir)


async def test_the_cache_is_bounded_oldest_out(keys: KeyRing, decodes: list[str]) -> None:
    tokens = [issue(keys, tenant=str(uuid.uuid4())) for _ in range(3)]
    clock = Clock(jwt.get_unverified_claims(tokens[0])["iat"])
    check = verifier(Ring(keys), clock, cache_size=2)
    for token in tokens:
        await check.verify(token)
    await check.verify(tokens[2])
    await check.verify(tokens[1])
    assert len(decodes) == 3
    await check.verify(tokens[0])  # evicted: verified again
    assert len(decodes) == 4


async def test_an_invalid_token_is_never_cached(keys: KeyRing, decodes: list[str]) -> None:
    token = issue(keys)
    head, body, _ = token.split(".")
    forged = f"{head}.{body}.{'A' * 86}"
    clock = Clock(jwt.get_unverified_claims(token)["iat"])
    check = verifier(Ring(keys), clock)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await check.verify(forged)
    assert decodes == [forged, forged]
    # A forged signature on a cached token's claims is a different token: still refused.
    await check.verify(token)
    with pytest.raises(Unauthenticated):
        await check.verify(forged)
