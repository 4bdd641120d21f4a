"""ES256 signing keys in an HSM through PKCS#11 (JWT_KEY_PROVIDER=pkcs11): a SigningKeyRing.

The ring is every EC private key on the token whose label starts with `es256-`; the label (and
CKA_ID, the same bytes) is the kid, so kids sort by age exactly as the PEM files' names do. Key
pairs are generated inside the token, the private half sensitive and never extractable; its
public half is a token object too, and its CKA_EC_POINT is what the JWKS publishes.

The token signs with CKM_ECDSA over a SHA-256 digest made here: SoftHSM2 2.6 (Debian 12) offers
no CKM_ECDSA_SHA256, and signing a digest is what every HSM offers. PKCS#11 returns r || s,
which is the JWS signature as it stands.

A PKCS#11 session is not safe to use from two threads at once: one lock serialises every call
into the token. A session the token dropped (an HSM restart, a network HSM's reconnect) is
opened again once, and the keys found again, before a signature fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import (
    DeviceRemoved,
    KeyHandleInvalid,
    ObjectHandleInvalid,
    PKCS11Error,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    UserNotLoggedIn,
)
from pkcs11.util.ec import encode_named_curve_parameters

from services.auth.signing import (
    KID_PATTERN,
    KID_PREFIX,
    SIGNATURE_BYTES,
    SigningKeyError,
    UnknownSigningKey,
    new_kid,
    public_jwk,
)
from services.common.keys.token import Pkcs11Settings

_CURVE = "secp256r1"
_EC_PARAMS = encode_named_curve_parameters(_CURVE)
# An uncompressed P-256 point: 0x04 | x (32) | y (32).
_POINT_BYTES = 65
# Errors after which the session, or the handles found through it, are no longer good.
_SESSION_LOST = (
    SessionHandleInvalid,
    SessionClosed,
    DeviceRemoved,
    TokenNotPresent,
    UserNotLoggedIn,
    ObjectHandleInvalid,
    KeyHandleInvalid,
)
# Attributes of a generated pair: the private key signs and does nothing else, never leaves.
_PRIVATE_TEMPLATE = {
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}
_PUBLIC_TEMPLATE = {
    Attribute.PRIVATE: False,
    Attribute.VERIFY: True,
    Attribute.ENCRYPT: False,
    Attribute.WRAP: False,
    Attribute.DERIVE: False,
}


def uncompressed_point(ec_point: bytes) -> bytes:
    """The 65-byte point in a CKA_EC_POINT value.

    PKCS#11 (v2.40 §2.3.3) stores the DER encoding of an ECPoint, an OCTET STRING (04 41 …);
    some tokens store the bare point. Both are accepted; anything else is not a P-256 key.
    """
    if len(ec_point) == 2 + _POINT_BYTES and ec_point[:2] == bytes((0x04, _POINT_BYTES)):
        return ec_point[2:]
    if len(ec_point) == _POINT_BYTES:
        return ec_point
    raise ValueError(f"a CKA_EC_POINT of {len(ec_point)} bytes is not a P-256 point")


@dataclass(frozen=True)
class _Pair:
    private: Any
    public: Any
    jwk: dict[str, str]


class Pkcs11KeyRing:
    """SigningKeyRing on one PKCS#11 token, through one logged-in session held open."""

    def __init__(self, settings: Pkcs11Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._session: Any = None
        self._pairs: dict[str, _Pair] = {}
        try:
            self._open()  # no lock yet: no other thread can see the ring
        except BaseException:
            self.close()
            raise

    def describe(self) -> str:
        return self._settings.describe()

    def _open(self) -> None:
        settings = self._settings
        if self._session is not None:
            with contextlib.suppress(PKCS11Error):
                self._session.close()
            self._session = None
        try:
            self._session = settings.open_session()
        except (PKCS11Error, RuntimeError, OSError) as exc:
            raise SigningKeyError(f"cannot open {settings.describe()}: {exc!r}") from exc
        self._load()

    def _load(self) -> None:
        try:
            # Each search is read to its end before any attribute is: a token may allow no other
            # call on the session while a search is open.
            found_publics = list(
                self._session.get_objects(
                    {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC}
                )
            )
            found_privates = list(
                self._session.get_objects(
                    {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.EC}
                )
            )
            publics = {key.label: key for key in found_publics}
            pairs: dict[str, _Pair] = {}
            for private in found_privates:
                kid = private.label or ""
                if kid.startswith(KID_PREFIX):
                    pairs[kid] = self._pair(kid, private, publics.get(kid))
        except PKCS11Error as exc:
            raise SigningKeyError(f"cannot list the token's keys: {exc!r}") from exc
        self._pairs = pairs

    @staticmethod
    def _pair(kid: str, private: Any, public: Any) -> _Pair:
        if not KID_PATTERN.fullmatch(kid):
            raise SigningKeyError(f"the token holds a key labelled {kid!r}, not a kid of ours")
        if public is None:
            raise SigningKeyError(f"signing key {kid} has no public key on the token to publish")
        if public[Attribute.EC_PARAMS] != _EC_PARAMS:
            raise SigningKeyError(f"signing key {kid} is not on P-256 (ES256)")
        try:
            point = uncompressed_point(bytes(public[Attribute.EC_POINT]))
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError as exc:
            raise SigningKeyError(f"signing key {kid}: {exc}") from None
        return _Pair(private, public, public_jwk(kid, key))

    def refresh(self) -> None:
        """Reads the token's keys again (a key created or destroyed by another process)."""
        with self._lock:
            self._load()

    @property
    def signing_kid(self) -> str:
        pairs = self._pairs
        if not pairs:
            raise SigningKeyError(
                f"no signing key (an EC key labelled {KID_PREFIX}*) on {self.describe()};"
                " create one with `python -m services.auth.admin rotate-key`"
            )
        return max(pairs)

    def kids(self) -> tuple[str, ...]:
        return tuple(sorted(self._pairs))

    def jwks(self) -> list[dict[str, str]]:
        pairs = self._pairs
        return [pairs[kid].jwk for kid in sorted(pairs, reverse=True)]

    def sign(self, kid: str, message: bytes) -> bytes:
        digest = hashlib.sha256(message).digest()
        with self._lock:
            try:
                return self._sign(kid, digest)
            except _SESSION_LOST:
                pass
            self._open()
            try:
                return self._sign(kid, digest)
            except PKCS11Error as exc:
                raise SigningKeyError(f"the token refused to sign with {kid}: {exc!r}") from exc

    def _sign(self, kid: str, digest: bytes) -> bytes:
        pair = self._pairs.get(kid)
        if pair is None:
            raise UnknownSigningKey(kid)
        try:
            signature: bytes = pair.private.sign(digest, mechanism=Mechanism.ECDSA)
        except _SESSION_LOST:
            raise
        except PKCS11Error as exc:
            raise SigningKeyError(f"the token refused to sign with {kid}: {exc!r}") from exc
        if len(signature) != SIGNATURE_BYTES:
            raise SigningKeyError(f"the token's ECDSA signature is {len(signature)} bytes")
        return signature

    def create(self) -> str:
        with self._lock:
            kid = new_kid(self._pairs)
            try:
                parameters = self._session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: _EC_PARAMS}, local=True
                )
                parameters.generate_keypair(
                    store=True,
                    label=kid,
                    id=kid.encode("ascii"),
                    public_template=_PUBLIC_TEMPLATE,
                    private_template=_PRIVATE_TEMPLATE,
                )
            except PKCS11Error as exc:
                raise SigningKeyError(f"the token refused to generate a key pair: {exc!r}") from exc
            self._load()
        return kid

    def destroy(self, kid: str) -> None:
        with self._lock:
            pair = self._pairs.get(kid)
            if pair is None:
                raise UnknownSigningKey(kid)
            try:
                pair.private.destroy()
                pair.public.destroy()
            except PKCS11Error as exc:
                raise SigningKeyError(f"the token refused to destroy {kid}: {exc!r}") from exc
            self._load()

    def close(self) -> None:
        with self._lock:
            self._pairs = {}
            if self._session is not None:
                with contextlib.suppress(PKCS11Error):
                    self._session.close()
                self._session = None
