"""Access tokens: verifiable by anyone from the JWKS, and unforgeable at every service.

A real token is verified with PyJWT, a library the services do not use, against
`/.well-known/jwks.json` fetched through the gateway. Then each forged or broken credential is
sent to one route of each service and must get 401 UNAUTHENTICATED.

Tokens whose only defect is a claim (expired, wrong `aud`, ...) are signed with the stack's real
signing key, read from its key directory, so the claim is the only reason left to refuse them;
the control `test_a_token_minted_with_the_real_key_is_accepted` proves that such a token with
correct claims passes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.auth.config import AuthConfig
from tests.e2e.helpers import Tenant, assert_status_body, register_and_login

pytestmark = pytest.mark.e2e

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]
REQUIRED_CLAIMS = ("iss", "aud", "sub", "tenant_id", "role", "jti", "iat", "nbf", "exp", "typ")
# One authenticated route of each service.
ROUTES = ["/v1/users/me", "/v1/lattices", "/v1/webhooks"]
# The contract: access-token lifetime is minutes (the auth service allows 300..900 s).
LIFETIME_S = (300, 900)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unverified_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@dataclass(frozen=True)
class Keys:
    """What a forger might hold, plus what the test borrows from the stack to isolate defects."""

    jwks: list[dict[str, str]]
    kid: str  # the kid of the key that signs now
    real: ec.EllipticCurvePrivateKey  # the stack's signing key (for claim-only defects)
    attacker: ec.EllipticCurvePrivateKey  # a key nobody trusts
    issuer: str
    audience: str

    @property
    def public_pem(self) -> bytes:
        return self.real.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def public_jwk(self) -> dict[str, str]:
        return next(key for key in self.jwks if key["kid"] == self.kid)


@dataclass(frozen=True)
class Forge:
    """A real token of the test's tenant and the means to make variants of it."""

    token: str
    keys: Keys

    def claims(self, **changes: Any) -> dict[str, Any]:
        """The real token's claims with fresh times and jti, then `changes` (None deletes)."""
        now = int(time.time())
        claims = unverified_claims(self.token)
        claims.update(jti=uuid.uuid4().hex, iat=now, nbf=now, exp=now + 600)
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def es256(
        self,
        claims: dict[str, Any],
        key: ec.EllipticCurvePrivateKey | None = None,
        **header: Any,
    ) -> str:
        headers = {"kid": self.keys.kid, **header}
        return jwt.encode(claims, key or self.keys.real, algorithm="ES256", headers=headers)

    def hs256(self, secret: bytes) -> str:
        header = {"alg": "HS256", "typ": "JWT", "kid": self.keys.kid}
        signing_input = f"{b64url_json(header)}.{b64url_json(self.claims())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(mac)}"

    def unsigned(self, alg: str, signature: str = "") -> str:
        header = {"alg": alg, "typ": "JWT", "kid": self.keys.kid}
        return f"{b64url_json(header)}.{b64url_json(self.claims())}.{signature}"

    def tampered(self, **changes: Any) -> str:
        """The real token with its payload edited and its genuine signature kept."""
        header, _payload, signature = self.token.split(".")
        claims = unverified_claims(self.token)
        claims.update(changes)
        return f"{header}.{b64url_json(claims)}.{signature}"


def raw_get(base_url: str, path: str, authorization: str) -> tuple[int, str]:
    """GET with an `authorization` header sent byte for byte as given."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        conn.request("GET", path, headers={"authorization": authorization})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _bearer(make: Callable[[Forge], str]) -> Callable[[Forge], str]:
    return lambda forge: f"Bearer {make(forge)}"


def _attacker_jwk(forge: Forge) -> dict[str, str]:
    numbers = forge.keys.attacker.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


# name -> the whole `authorization` header value
FORGERIES: dict[str, Callable[[Forge], str]] = {
    # Signatures
    "other-key-with-the-real-kid": _bearer(lambda f: f.es256(f.claims(), f.keys.attacker)),
    "other-key-with-an-embedded-jwk": _bearer(
        lambda f: f.es256(f.claims(), f.keys.attacker, jwk=_attacker_jwk(f))
    ),
    "other-key-with-a-jku": _bearer(
        lambda f: f.es256(f.claims(), f.keys.attacker, jku="http://127.0.0.1:9/jwks.json")
    ),
    "alg-none": _bearer(lambda f: f.unsigned("none")),
    "alg-None": _bearer(lambda f: f.unsigned("None")),
    "alg-none-with-the-real-signature": _bearer(
        lambda f: f.unsigned("none", f.token.rsplit(".", 1)[1])
    ),
    "signature-stripped": _bearer(lambda f: f.token.rsplit(".", 1)[0] + "."),
    "hs256-with-the-public-key-pem": _bearer(lambda f: f.hs256(f.keys.public_pem)),
    "hs256-with-the-public-jwk-json": _bearer(
        lambda f: f.hs256(json.dumps(f.keys.public_jwk, separators=(",", ":")).encode())
    ),
    "hs256-with-the-public-jwk-json-spaced": _bearer(
        lambda f: f.hs256(json.dumps(f.keys.public_jwk).encode())
    ),
    "unknown-kid-real-key": _bearer(lambda f: f.es256(f.claims(), kid="rotated-away")),
    "unknown-kid-other-key": _bearer(
        lambda f: f.es256(f.claims(), f.keys.attacker, kid=uuid.uuid4().hex)
    ),
    "kid-path-traversal": _bearer(lambda f: f.es256(f.claims(), kid="../../../../dev/null")),
    # Claims, signed with the real key
    "expired": _bearer(
        lambda f: f.es256(f.claims(iat=int(time.time()) - 900, exp=int(time.time()) - 60))
    ),
    "nbf-in-the-future": _bearer(lambda f: f.es256(f.claims(nbf=int(time.time()) + 300))),
    "wrong-aud": _bearer(lambda f: f.es256(f.claims(aud="some-other-api"))),
    "wrong-iss": _bearer(lambda f: f.es256(f.claims(iss="https://issuer.example"))),
    "typ-refresh": _bearer(lambda f: f.es256(f.claims(typ="refresh"))),
    "typ-id": _bearer(lambda f: f.es256(f.claims(typ="id"))),
    # Ids the services use as UUIDs, and an iat beyond the clock skew (60 s).
    "tenant_id-not-a-uuid": _bearer(lambda f: f.es256(f.claims(tenant_id="not-a-uuid"))),
    "tenant_id-a-number": _bearer(lambda f: f.es256(f.claims(tenant_id=42))),
    "sub-not-a-uuid": _bearer(lambda f: f.es256(f.claims(sub="admin"))),
    "iat-an-hour-ahead": _bearer(lambda f: f.es256(f.claims(iat=int(time.time()) + 3600))),
    **{
        f"missing-{claim}": _bearer(lambda f, claim=claim: f.es256(f.claims(**{claim: None})))
        for claim in REQUIRED_CLAIMS
    },
    # The real token, edited after signing
    "tampered-tenant_id": _bearer(lambda f: f.tampered(tenant_id=str(uuid.uuid4()))),
    "tampered-sub": _bearer(lambda f: f.tampered(sub=str(uuid.uuid4()))),
    "tampered-exp": _bearer(lambda f: f.tampered(exp=int(time.time()) + 86_400)),
    # Not a token at all
    "garbage": lambda f: "Bearer not-a-token",
    "three-dots": lambda f: "Bearer a.b.c",
    "jwt-shaped-junk": lambda f: "Bearer eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
    "long-junk": lambda f: "Bearer " + "A" * 6000,
    "empty-bearer": lambda f: "Bearer ",
    "bare-bearer": lambda f: "Bearer",
    "bearer-twice": lambda f: f"Bearer Bearer {f.token}",
    # Other schemes, with the real token where one fits
    "basic": lambda f: "Basic " + base64.b64encode(b"user:password").decode(),
    "token-scheme": lambda f: f"Token {f.token}",
    "no-scheme": lambda f: f.token,
}


# Forgeries whose signature is genuine: only the claim or the kid is wrong.
SIGNED_WITH_THE_REAL_KEY = [
    "unknown-kid-real-key",
    "kid-path-traversal",
    "expired",
    "nbf-in-the-future",
    "wrong-aud",
    "wrong-iss",
    "typ-refresh",
    "typ-id",
    "tenant_id-not-a-uuid",
    "tenant_id-a-number",
    "sub-not-a-uuid",
    "iat-an-hour-ahead",
    *(f"missing-{claim}" for claim in REQUIRED_CLAIMS),
]


@pytest.fixture(scope="module")
def client(stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=10, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def tenant(client: httpx.Client) -> Tenant:
    return register_and_login(client)


@pytest.fixture(scope="module")
def jwks(client: httpx.Client) -> list[dict[str, str]]:
    reply = client.get("/.well-known/jwks.json")
    assert reply.status_code == 200, reply.text
    keys: list[dict[str, str]] = reply.json()["keys"]
    return keys


@pytest.fixture(scope="module")
def keys(stack, jwks: list[dict[str, str]]) -> Keys:
    config = AuthConfig.from_env(stack.env)
    kid = jwks[0]["kid"]  # newest first: the one that signs
    pem = (config.signing_keys.directory / f"{kid}.pem").read_bytes()
    real = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(real, ec.EllipticCurvePrivateKey)
    return Keys(
        jwks=jwks,
        kid=kid,
        real=real,
        attacker=ec.generate_private_key(ec.SECP256R1()),
        issuer=config.issuer,
        audience=config.audience,
    )


@pytest.fixture(scope="module")
def forge(tenant: Tenant, keys: Keys) -> Forge:
    return Forge(tenant.access_token, keys)


# ---------------------------------------------------------------------------- verification
def test_the_jwks_publishes_only_public_es256_keys(jwks: list[dict[str, str]]) -> None:
    assert jwks, "no keys published"
    kids = [key["kid"] for key in jwks]
    assert len(set(kids)) == len(kids)
    assert all(kids)
    for key in jwks:
        assert "d" not in key, "a private key component is published"
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")


def test_a_real_token_verifies_with_an_independent_library(
    client: httpx.Client, tenant: Tenant, jwks: list[dict[str, str]], keys: Keys
) -> None:
    token = tenant.access_token
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    by_kid = {key["kid"]: key for key in jwks}
    assert header["kid"] in by_kid, "the token's kid is not in the JWKS"
    public_key = jwt.PyJWK(by_kid[header["kid"]]).key

    claims = jwt.decode(
        token,
        key=public_key,
        algorithms=["ES256"],
        audience=keys.audience,
        issuer=keys.issuer,
        options={"require": list(REQUIRED_CLAIMS)},
    )

    me = client.get("/v1/users/me", headers=tenant.headers).json()
    assert claims["typ"] == "access"
    assert (claims["sub"], claims["tenant_id"], claims["role"]) == (
        me["id"],
        tenant.tenant_id,
        "owner",
    )
    now = time.time()
    assert claims["nbf"] <= now + 5
    assert claims["iat"] <= now + 5
    assert claims["exp"] > now
    assert LIFETIME_S[0] <= claims["exp"] - claims["iat"] <= LIFETIME_S[1]
    assert claims["jti"]


def test_every_login_gets_its_own_jti(client: httpx.Client, tenant: Tenant) -> None:
    reply = client.post("/v1/auth/login", json={"email": tenant.email, "password": tenant.password})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    claims = unverified_claims(body["access_token"])
    assert claims["jti"] != unverified_claims(tenant.access_token)["jti"]
    assert body["expires_in"] == claims["exp"] - claims["iat"]


# ---------------------------------------------------------------------------- controls
@pytest.mark.parametrize("route", ROUTES)
def test_the_real_token_is_accepted(client: httpx.Client, tenant: Tenant, route: str) -> None:
    assert client.get(route, headers=tenant.headers).status_code == 200


@pytest.mark.parametrize("route", ROUTES)
def test_a_token_minted_with_the_real_key_is_accepted(
    client: httpx.Client, forge: Forge, route: str
) -> None:
    token = forge.es256(forge.claims())
    reply = client.get(route, headers={"authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("route", ROUTES)
def test_an_iat_within_the_clock_skew_is_accepted(
    client: httpx.Client, forge: Forge, route: str
) -> None:
    """Clocks drift: an iat 30 s ahead (under the 60 s allowed) is no forgery."""
    token = forge.es256(forge.claims(iat=int(time.time()) + 30))
    reply = client.get(route, headers={"authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("forgery", SIGNED_WITH_THE_REAL_KEY)
def test_claim_forgeries_carry_a_genuine_signature(forge: Forge, forgery: str) -> None:
    """So their 401 below can only come from the claim (or kid) they get wrong."""
    token = FORGERIES[forgery](forge).removeprefix("Bearer ")
    jwt.decode(
        token,
        key=forge.keys.real.public_key(),
        algorithms=["ES256"],
        options={
            "verify_signature": True,
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": False,
            "verify_iss": False,
        },
    )


# ---------------------------------------------------------------------------- forgeries
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_credential_is_401(
    client: httpx.Client, forge: Forge, forgery: str, route: str
) -> None:
    authorization = FORGERIES[forgery](forge)
    if authorization != authorization.strip():
        # httpx refuses to send a header value with trailing whitespace; a raw client will.
        status, body = raw_get(str(client.base_url), route, authorization)
        assert status == 401, body
        assert json.loads(body)["code"] == UNAUTHENTICATED, body
        return
    reply = client.get(route, headers={"authorization": authorization})
    assert_status_body(reply, 401, UNAUTHENTICATED)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "api_key",
    ["", "cat_", "cat_aaaaaaaaaaaa_" + "A" * 43, "not-a-key", "cat_" + "a" * 200],
    ids=["empty", "prefix-only", "well-formed-unknown", "garbage", "over-long"],
)
def test_a_forged_api_key_is_401(client: httpx.Client, route: str, api_key: str) -> None:
    reply = client.get(route, headers={"x-api-key": api_key})
    assert_status_body(reply, 401, UNAUTHENTICATED)


@pytest.mark.parametrize("route", ROUTES)
def test_a_real_token_smuggled_beside_a_forged_one_is_refused(
    client: httpx.Client, forge: Forge, route: str
) -> None:
    """Two credentials in one request: whichever one a hop would pick, the answer is no."""
    forged = FORGERIES["tampered-tenant_id"](forge)
    real = f"Bearer {forge.token}"
    for headers in (
        [("authorization", forged), ("authorization", real)],
        [("authorization", real), ("authorization", forged)],
        [("authorization", real), ("x-api-key", "cat_aaaaaaaaaaaa_" + "A" * 43)],
    ):
        reply = client.get(route, headers=headers)
        assert reply.status_code in (400, 401), (headers[0][1][:20], reply.text)
