"""Envelope encryption: each value under a random 256-bit data key, the data key under a KEK.

A sealed value is one self-describing blob (version 1):

    0x01 | len(kek_id) | kek_id | wrap nonce (12) | wrapped data key (32 + 16 tag)
         | nonce (12) | ciphertext + 16 tag

Both AES-256-GCM operations take the caller's `context` as associated data (with a different
label each), so a blob opens only where it was sealed: copied to another row it fails to
authenticate. Rotating a KEK rewraps the data key alone; the value's ciphertext is unchanged.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.keys.base import (
    NONCE_BYTES,
    TAG_BYTES,
    IntegrityError,
    KekError,
    KekRing,
    check_kek_id,
)

VERSION = 1
DATA_KEY_BYTES = 32
_WRAPPED_BYTES = DATA_KEY_BYTES + TAG_BYTES
_WRAP_LABEL = b"catalytic/data-key/v1\x00"
_DATA_LABEL = b"catalytic/value/v1\x00"


class SealedFormatError(KekError):
    """The bytes are not a sealed value of a version this code reads."""


@dataclass(frozen=True)
class Sealed:
    """A sealed value taken apart."""

    kek_id: str
    wrap_nonce: bytes
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        kek_id = self.kek_id.encode("ascii")
        return b"".join(
            (
                bytes((VERSION, len(kek_id))),
                kek_id,
                self.wrap_nonce,
                self.wrapped_key,
                self.nonce,
                self.ciphertext,
            )
        )

    @classmethod
    def parse(cls, blob: bytes) -> Sealed:
        if len(blob) < 2 or blob[0] != VERSION:
            raise SealedFormatError("not a sealed value (unknown version)")
        end = 2 + blob[1]
        fixed = NONCE_BYTES + _WRAPPED_BYTES + NONCE_BYTES + TAG_BYTES
        if len(blob) < end + fixed:
            raise SealedFormatError("a sealed value is truncated")
        try:
            kek_id = check_kek_id(blob[2:end].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise SealedFormatError("a sealed value names no valid key-encryption key") from None
        wrapped_at = end + NONCE_BYTES
        nonce_at = wrapped_at + _WRAPPED_BYTES
        return cls(
            kek_id=kek_id,
            wrap_nonce=blob[end:wrapped_at],
            wrapped_key=blob[wrapped_at:nonce_at],
            nonce=blob[nonce_at : nonce_at + NONCE_BYTES],
            ciphertext=blob[nonce_at + NONCE_BYTES :],
        )


def kek_id_of(blob: bytes) -> str:
    """The KEK that wraps the blob's data key."""
    return Sealed.parse(blob).kek_id


def _wrap(ring: KekRing, kek_id: str, data_key: bytes, context: bytes) -> tuple[bytes, bytes]:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce, ring.encrypt(kek_id, nonce, data_key, _WRAP_LABEL + context)


def _unwrap(ring: KekRing, sealed: Sealed, context: bytes) -> bytes:
    data_key = ring.decrypt(
        sealed.kek_id, sealed.wrap_nonce, sealed.wrapped_key, _WRAP_LABEL + context
    )
    if len(data_key) != DATA_KEY_BYTES:
        raise IntegrityError("an unwrapped data key has the wrong length")
    return data_key


def seal(ring: KekRing, plaintext: bytes, context: bytes) -> bytes:
    """`plaintext` under a new data key wrapped by the ring's current KEK."""
    kek_id = ring.current_id
    data_key = AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)
    wrap_nonce, wrapped = _wrap(ring, kek_id, data_key, context)
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _DATA_LABEL + context)
    return Sealed(kek_id, wrap_nonce, wrapped, nonce, ciphertext).to_bytes()


def unseal(ring: KekRing, blob: bytes, context: bytes) -> bytes:
    """The plaintext; UnknownKek when its KEK is not in the ring, IntegrityError (or
    SealedFormatError) when the blob was changed or belongs to another context."""
    sealed = Sealed.parse(blob)
    return _decrypt(_unwrap(ring, sealed, context), sealed, context)


def _decrypt(data_key: bytes, sealed: Sealed, context: bytes) -> bytes:
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, _DATA_LABEL + context)
    except InvalidTag:
        raise IntegrityError("a sealed value does not authenticate in this context") from None


def rewrap(ring: KekRing, blob: bytes, context: bytes) -> bytes:
    """The blob with its data key wrapped by the current KEK (itself when it already is).

    The value is opened first, so a blob that would not open is never rewrapped.
    """
    sealed = Sealed.parse(blob)
    current = ring.current_id
    if sealed.kek_id == current:
        return blob
    data_key = _unwrap(ring, sealed, context)
    _decrypt(data_key, sealed, context)
    wrap_nonce, wrapped = _wrap(ring, current, data_key, context)
    return Sealed(current, wrap_nonce, wrapped, sealed.nonce, sealed.ciphertext).to_bytes()
