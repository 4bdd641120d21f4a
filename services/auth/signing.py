"""The contract every JWT signing-key provider meets: ES256 keys named by a kid that sorts by age.

A ring holds one or more P-256 key pairs, each named by its `kid`. The last kid in name order
signs (generated kids sort by the time they were made, so the newest signs); every key is
published in the JWKS so that tokens signed by an older one verify until they expire. A ring
returns raw ECDSA signatures, r || s, 32 bytes each: exactly JWS's ES256 signature format
(RFC 7518 §3.4), whether the private key sits in a PEM file or in an HSM.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from services.common.keys.base import sortable_id

ALGORITHM = "ES256"
KID_PREFIX = "es256-"
# What a kid we generate looks like: a file name, a PKCS#11 label and a JWS header field.
KID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
COORDINATE_BYTES = 32
SIGNATURE_BYTES = 2 * COORDINATE_BYTES


class SigningKeyError(Exception):
    """A signing key is missing or unusable, or the provider refused an operation."""


class UnknownSigningKey(SigningKeyError):
    """No signing key with this kid is in the ring."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"no signing key {kid!r} in the ring")
        self.kid = kid


def new_kid(existing: Iterable[str] = ()) -> str:
    """A fresh kid that sorts after every kid in `existing` (so its key signs next)."""
    existing = list(existing)  # read twice: once more for the message
    try:
        return sortable_id(KID_PREFIX, existing)
    except ValueError:
        raise SigningKeyError(
            f"a new key's kid would sort before {max(existing)}, so it would never sign;"
            " check the clock and the names of the existing keys"
        ) from None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(kid: str, key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The JWK that verifies the key's ES256 signatures (RFC 7518 §6.2.1)."""
    if key.curve.name != "secp256r1":
        raise SigningKeyError(f"signing key {kid} is on {key.curve.name}, not P-256 (ES256)")
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(COORDINATE_BYTES, "big")),
        "y": _b64url(numbers.y.to_bytes(COORDINATE_BYTES, "big")),
        "kid": kid,
        "use": "sig",
        "alg": ALGORITHM,
    }


class SigningKeyRing(Protocol):
    """The signing keys one provider holds (a directory of PEM files, or a PKCS#11 token)."""

    @property
    def signing_kid(self) -> str:
        """The key that signs new tokens: the last kid in name order."""

    def kids(self) -> tuple[str, ...]:
        """Every key in the ring, in name order (the signing one last)."""

    def jwks(self) -> list[dict[str, str]]:
        """Every key's public JWK, newest first."""

    def sign(self, kid: str, message: bytes) -> bytes:
        """ECDSA P-256 with SHA-256 over `message`: r || s (SIGNATURE_BYTES);
        UnknownSigningKey when the ring has no such key."""

    def create(self) -> str:
        """Generates a new key pair in the provider, whose kid sorts last; returns the kid."""

    def destroy(self, kid: str) -> None:
        """Deletes the key pair for good; tokens it signed stop verifying once unpublished."""

    def describe(self) -> str:
        """Where the keys are, for messages (never a secret)."""

    def close(self) -> None:
        """Releases what the ring holds open (an HSM session)."""
