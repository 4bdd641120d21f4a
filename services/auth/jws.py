"""Compact ES256 JWS (RFC 7515 §7.1), signed by a key ring that may never show us the key.

python-jose signs only with key material it holds; a key in an HSM signs inside the token. So
auth builds the JWS itself: base64url(header) "." base64url(payload), signed by the ring, whose
r || s is already the JWS signature. The header is the one python-jose wrote before
(`alg`, `kid`, `typ`, keys sorted), so tokens look the same whichever provider signs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from services.auth.signing import (
    ALGORITHM,
    SIGNATURE_BYTES,
    SigningKeyError,
    SigningKeyRing,
    UnknownSigningKey,
)


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _json(value: Mapping[str, object], *, sort_keys: bool) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys).encode("utf-8")


def encode(claims: Mapping[str, object], ring: SigningKeyRing) -> str:
    """The claims as a compact JWS, signed with the ring's signing key and naming it by `kid`."""
    try:
        return _encode(claims, ring, ring.signing_kid)
    except UnknownSigningKey:
        # Retired under us (another process destroyed it in the token): the ring has read its
        # keys again, and the newest it holds now signs.
        return _encode(claims, ring, ring.signing_kid)


def _encode(claims: Mapping[str, object], ring: SigningKeyRing, kid: str) -> str:
    header = {"alg": ALGORITHM, "kid": kid, "typ": "JWT"}
    signing_input = (
        _b64url(_json(header, sort_keys=True)) + b"." + _b64url(_json(claims, sort_keys=False))
    )
    signature = ring.sign(kid, signing_input)
    if len(signature) != SIGNATURE_BYTES:
        raise SigningKeyError(f"signing key {kid} returned {len(signature)} bytes, not r || s")
    return (signing_input + b"." + _b64url(signature)).decode("ascii")
