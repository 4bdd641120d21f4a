"""JWT signing keys under both providers: PEM files and a SoftHSM2 token (PKCS#11).

Tokens are signed by the ring (in the token, for the HSM) through auth's own JWS code and must
verify with the published JWKS alone: through the services' verifier, python-jose and PyJWT.
"""

from __future__ import annotations

import base64
import json
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import jwt as pyjwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jose import jwt as jose_jwt

from services.auth import jws
from services.auth.config import SigningKeyConfig, open_signing_keys
from services.auth.hsm_keys import Pkcs11KeyRing, uncompressed_point
from services.auth.keys import KeyRing
from services.auth.signing import (
    KID_PREFIX,
    SigningKeyError,
    SigningKeyRing,
    UnknownSigningKey,
    new_kid,
)
from services.auth.tokens import TokenIssuer
from services.common.access_tokens import AccessTokenVerifier
from services.common.config import ConfigError
from services.common.errors import Unauthenticated
from services.common.keys.token import Pkcs11Settings
from tests.unit.common.softhsm import clear_signing_keys, softhsm_token

USER = "0b6f4a1e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"
TENANT = "7d3c2b1a-0f9e-4d8c-b7a6-958473625140"
ISSUER = "catalytic-auth"
AUDIENCE = "catalytic-api"


@pytest.fixture(params=["file", "pkcs11"])
def ring(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SigningKeyRing]:
    """A ring of each provider holding one key."""
    if request.param == "file":
        yield KeyRing.load(tmp_path / "keys")
        return
    token = softhsm_token()
    clear_signing_keys(token)
    hsm = Pkcs11KeyRing(token.settings())
    try:
        hsm.create()
        yield hsm
    finally:
        hsm.close()
        clear_signing_keys(token)


@pytest.fixture
def hsm() -> Iterator[Pkcs11KeyRing]:
    """An empty ring on the SoftHSM2 token."""
    token = softhsm_token()
    clear_signing_keys(token)
    ring = Pkcs11KeyRing(token.settings())
    try:
        yield ring
    finally:
        ring.close()
        clear_signing_keys(token)


def issue(ring: SigningKeyRing) -> str:
    issuer = TokenIssuer(ring, issuer=ISSUER, audience=AUDIENCE, ttl_s=600)
    return issuer.issue(user_id=USER, tenant_id=TENANT, role="owner").token


def verifier(jwks: Sequence[dict[str, str]]) -> AccessTokenVerifier:
    async def fetch() -> Sequence[dict[str, str]]:
        return jwks

    return AccessTokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE)


def pyjwt_claims(token: str, jwks: Sequence[dict[str, str]]) -> dict[str, object]:
    kid = pyjwt.get_unverified_header(token)["kid"]
    [jwk] = [key for key in jwks if key["kid"] == kid]
    claims: dict[str, object] = pyjwt.decode(
        token,
        pyjwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer=ISSUER,
    )
    return claims


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def test_a_token_verifies_with_the_published_jwks_alone(ring: SigningKeyRing) -> None:
    token = issue(ring)
    jwks = ring.jwks()

    principal = await verifier(jwks).verify(token)
    assert (principal.user_id, principal.tenant_id) == (USER, TENANT)
    assert pyjwt_claims(token, jwks)["sub"] == USER
    assert jose_jwt.decode(token, jwks[0], algorithms=["ES256"], audience=AUDIENCE)["sub"] == USER
    header = json.loads(b64decode(token.split(".")[0]))
    assert header == {"alg": "ES256", "kid": ring.signing_kid, "typ": "JWT"}
    assert jwks[0].keys() == {"kty", "crv", "x", "y", "kid", "use", "alg"}


def test_the_signature_is_r_and_s_as_jws_has_it(ring: SigningKeyRing) -> None:
    signature = ring.sign(ring.signing_kid, b"message")
    assert len(signature) == 64
    jwk = ring.jwks()[0]
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64decode(jwk["x"]), "big"),
        int.from_bytes(b64decode(jwk["y"]), "big"),
        ec.SECP256R1(),
    ).public_key()
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    public.verify(der, b"message", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(der, b"massage", ec.ECDSA(hashes.SHA256()))


def test_tokens_look_as_python_jose_wrote_them(tmp_path: Path) -> None:
    """The PEM provider's tokens keep python-jose's header and payload encoding."""
    keys = KeyRing.load(tmp_path / "keys")
    claims = {"sub": USER, "iat": 1, "nested": {"b": 1, "a": [2]}}
    ours = jws.encode(claims, keys)
    theirs = jose_jwt.encode(
        claims, keys.signing.private_pem, algorithm="ES256", headers={"kid": keys.signing.kid}
    )
    assert ours.rsplit(".", 1)[0] == theirs.rsplit(".", 1)[0]


async def test_rotation_the_new_key_signs_and_the_old_still_verifies(
    ring: SigningKeyRing,
) -> None:
    old_kid = ring.signing_kid
    old_token = issue(ring)
    new_kid_ = ring.create()

    assert ring.signing_kid == new_kid_ > old_kid
    assert ring.kids() == (old_kid, new_kid_)
    assert [key["kid"] for key in ring.jwks()] == [new_kid_, old_kid]  # newest first
    new_token = issue(ring)
    assert pyjwt.get_unverified_header(new_token)["kid"] == new_kid_
    jwks = ring.jwks()
    for token in (old_token, new_token):
        assert (await verifier(jwks).verify(token)).user_id == USER
        assert pyjwt_claims(token, jwks)["tenant_id"] == TENANT

    ring.destroy(old_kid)
    assert ring.kids() == (new_kid_,)
    with pytest.raises(Unauthenticated):
        await verifier(ring.jwks()).verify(old_token)
    with pytest.raises(UnknownSigningKey):
        ring.sign(old_kid, b"x")


def test_new_kids_sort_after_every_existing_kid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        time, "gmtime", lambda: time.struct_time((2026, 12, 5, 7, 30, 52, 5, 339, 0))
    )
    assert new_kid().startswith(f"{KID_PREFIX}20261205T073052Z-")
    assert new_kid(["es256-20200101T000000Z-ffffffff"]) > "es256-20200101T000000Z-ffffffff"
    # Made in the same second as a key with a high suffix, the new one still sorts after it.
    for _ in range(100):
        assert new_kid(["es256-20261205T073052Z-fffffff0"]) > "es256-20261205T073052Z-fffffff0"
    assert new_kid(["es256-20261205T073052Z-fffffffe"]) == "es256-20261205T073052Z-ffffffff"
    # (After ...-ffffffff the next second's kids sort: tests/unit/common/test_keys_envelope.py.)
    for impossible in ("es256-20271205T000000Z-00000000", "zz-hand-made"):
        with pytest.raises(SigningKeyError, match="sort before"):
            new_kid([impossible])


def test_hsm_private_keys_are_sensitive_and_never_extractable(hsm: Pkcs11KeyRing) -> None:
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.exceptions import AttributeSensitive

    kid = hsm.create()
    [private] = hsm._session.get_objects(
        {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.EC}
    )
    [public] = hsm._session.get_objects(
        {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC}
    )
    for key in (private, public):
        assert key.label == kid
        assert key[Attribute.ID] == kid.encode()
        assert key[Attribute.TOKEN] is True  # kept in the token, not the session
    assert private[Attribute.SENSITIVE] is True
    assert private[Attribute.EXTRACTABLE] is False
    assert private[Attribute.ALWAYS_SENSITIVE] is True
    assert private[Attribute.NEVER_EXTRACTABLE] is True
    assert private[Attribute.DERIVE] is False
    with pytest.raises(AttributeSensitive):
        private[Attribute.VALUE]


def test_a_key_pair_the_ring_cannot_publish_fails_by_name(hsm: Pkcs11KeyRing) -> None:
    from pkcs11 import Attribute, ObjectClass

    kid = hsm.create()
    [public] = hsm._session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY})
    public.destroy()
    with pytest.raises(SigningKeyError, match=f"{kid} has no public key"):
        hsm.refresh()


def test_an_empty_token_says_how_to_make_a_key(hsm: Pkcs11KeyRing) -> None:
    assert hsm.kids() == ()
    with pytest.raises(SigningKeyError, match="rotate-key"):
        _ = hsm.signing_kid


def test_a_dropped_session_is_opened_again(hsm: Pkcs11KeyRing) -> None:
    hsm.create()
    hsm._session.close()  # as an HSM restart would leave it
    token = issue(hsm)
    assert pyjwt_claims(token, hsm.jwks())["sub"] == USER


def test_a_key_retired_by_another_process_hands_over_to_the_newest(
    hsm: Pkcs11KeyRing,
) -> None:
    old = hsm.create()
    admin = Pkcs11KeyRing(hsm._settings)
    try:
        new = admin.create()
        admin.destroy(old)
    finally:
        admin.close()
    assert hsm.signing_kid == old  # it has not looked since
    token = issue(hsm)
    assert pyjwt.get_unverified_header(token)["kid"] == new
    assert pyjwt_claims(token, hsm.jwks())["sub"] == USER


def test_one_ring_signs_from_many_threads(hsm: Pkcs11KeyRing) -> None:
    hsm.create()
    tokens: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                tokens.append(issue(hsm))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    jwks = hsm.jwks()
    assert all(pyjwt_claims(token, jwks)["sub"] == USER for token in tokens)
    assert len(tokens) == 400


def test_sign_latency(ring: SigningKeyRing) -> None:
    """Signing one access token (JWS encoding included): printed with `-s`, bounded loosely."""
    for _ in range(20):
        issue(ring)
    samples = []
    for _ in range(500):
        started = time.perf_counter()
        issue(ring)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p50, p99 = statistics.median(samples), samples[int(len(samples) * 0.99)]
    print(f"\n{ring.describe()}: issue+sign p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    assert p99 < 50


@pytest.mark.parametrize(
    ("ec_point", "ok"),
    [
        (bytes((0x04, 65, 0x04)) + b"\x01" * 64, True),  # DER OCTET STRING, as PKCS#11 says
        (bytes((0x04,)) + b"\x01" * 64, True),  # the bare point, as some tokens store it
        (bytes((0x04, 97, 0x04)) + b"\x01" * 96, False),  # P-384
        (b"", False),
    ],
)
def test_ec_points_are_read_in_both_encodings(ec_point: bytes, ok: bool) -> None:
    if ok:
        assert uncompressed_point(ec_point) == bytes((0x04,)) + b"\x01" * 64
    else:
        with pytest.raises(ValueError, match="P-256"):
            uncompressed_point(ec_point)


def test_the_provider_is_read_from_the_environment(tmp_path: Path) -> None:
    assert SigningKeyConfig.from_env({}) == SigningKeyConfig()
    files = SigningKeyConfig.from_env({"RUN_DIR": "/srv", "JWT_KEYS_DIR": str(tmp_path)})
    assert files == SigningKeyConfig(provider="file", directory=tmp_path)
    with pytest.raises(ConfigError, match="JWT_KEY_PROVIDER"):
        SigningKeyConfig.from_env({"JWT_KEY_PROVIDER": "vault"})
    with pytest.raises(ConfigError, match="JWT_KEY_PROVIDER=pkcs11 needs PKCS11_PIN"):
        SigningKeyConfig.from_env({"JWT_KEY_PROVIDER": "pkcs11"})
    pin_file = tmp_path / "pin"
    pin_file.write_text("from-the-file\n")
    token = SigningKeyConfig.from_env(
        {
            "JWT_KEY_PROVIDER": "pkcs11",
            "PKCS11_MODULE": "/usr/lib/softhsm/libsofthsm2.so",
            "PKCS11_TOKEN_LABEL": "auth",
            "PKCS11_PIN_FILE": str(pin_file),
        }
    )
    assert token.token is not None
    assert token.token.pin == "from-the-file"
    assert "from-the-file" not in repr(token)


def test_an_unreachable_token_fails_by_name() -> None:
    token = softhsm_token()
    elsewhere = Pkcs11Settings(token.module, "no-such-token", token.pin)
    config = SigningKeyConfig(provider="pkcs11", token=elsewhere)
    with pytest.raises(SigningKeyError, match="no-such-token"):
        open_signing_keys(config, generate_if_empty=False)
