"""KEKs in a directory of key files (development, and deployments without an HSM).

Every `<kek id>.key` file holds one 256-bit key as standard base64 on one line. The directory
is the ring: adding a file adds a KEK (the last in name order wraps), deleting one destroys it.
Generated files are mode 0600 in a 0700 directory; back them up like any other secret.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.keys.base import (
    KEK_BYTES,
    IntegrityError,
    KekError,
    RefreshPolicy,
    UnknownKek,
    check_kek_id,
    new_kek_id,
)

SUFFIX = ".key"


def _read_key(path: Path) -> bytes:
    try:
        key = base64.b64decode(path.read_text("ascii").strip(), validate=True)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise KekError(f"{path} is not one base64 key") from None
    if len(key) != KEK_BYTES:
        raise KekError(f"{path} holds {len(key)} bytes; a key-encryption key is {KEK_BYTES}")
    return key


class FileKekRing:
    """KekRing over `directory`; empty rings are refused where a KEK is needed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._keys: dict[str, AESGCM] = {}
        self._refresh = RefreshPolicy()
        self.refresh()

    def refresh(self) -> None:
        paths = sorted(self.directory.glob(f"*{SUFFIX}")) if self.directory.is_dir() else []
        keys: dict[str, AESGCM] = {}
        for path in paths:
            keys[check_kek_id(path.name.removesuffix(SUFFIX))] = AESGCM(_read_key(path))
        self._keys = keys
        self._refresh.refreshed()

    @property
    def current_id(self) -> str:
        if not self._keys:
            raise KekError(
                f"no key-encryption key (*{SUFFIX}) in {self.directory}; create one with"
                " `python -m services.webhook.admin rotate-kek`"
            )
        return max(self._keys)

    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def _key(self, kek_id: str) -> AESGCM:
        key = self._keys.get(kek_id)
        if key is None and self._refresh.should_refresh(kek_id):
            self.refresh()
            key = self._keys.get(kek_id)
        if key is None:
            raise UnknownKek(kek_id)
        return key

    def encrypt(self, kek_id: str, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._key(kek_id).encrypt(nonce, plaintext, aad)

    def decrypt(self, kek_id: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        key = self._key(kek_id)
        try:
            return key.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise IntegrityError(
                f"data under key-encryption key {kek_id} does not authenticate"
            ) from None

    def create(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        kek_id = new_kek_id(self._keys)
        path = self.directory / f"{kek_id}{SUFFIX}"
        text = base64.b64encode(secrets.token_bytes(KEK_BYTES)).decode("ascii") + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
        self.refresh()
        return kek_id

    def destroy(self, kek_id: str) -> None:
        path = self.directory / f"{check_kek_id(kek_id)}{SUFFIX}"
        try:
            path.unlink()
        except FileNotFoundError:
            raise UnknownKek(kek_id) from None
        self.refresh()

    def close(self) -> None:
        self._keys = {}
