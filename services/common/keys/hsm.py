"""KEKs in an HSM through PKCS#11 (python-pkcs11): AES keys that never leave the token.

The ring is every AES secret key on the token whose label starts with `kek-`; the label is
the KEK id. Keys are generated inside the token as sensitive and non-extractable, and the
token does every AES-GCM operation (CKM_AES_GCM, which SoftHSM2 and the usual HSMs offer).
Give the platform a token of its own: any `kek-*` AES key on it joins the ring.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error
from pkcs11.mechanisms import GCMParams

from services.common.keys.base import (
    KEK_ID_PREFIX,
    TAG_BYTES,
    IntegrityError,
    KekError,
    RefreshPolicy,
    UnknownKek,
    check_kek_id,
    new_kek_id,
)
from services.common.keys.token import Pkcs11Settings

_KEY_BITS = 256
# Attributes of a generated KEK: usable for AES-GCM only, never readable outside the token.
_KEK_TEMPLATE = {
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}


class Pkcs11KekRing:
    """KekRing on one PKCS#11 token, through one logged-in session held open."""

    def __init__(self, module: str, token_label: str, pin: str) -> None:
        try:
            self._session: Any = Pkcs11Settings(module, token_label, pin).open_session()
        except (PKCS11Error, RuntimeError, OSError) as exc:
            raise KekError(
                f"cannot open PKCS#11 token {token_label!r} through {module}: {exc!r}"
            ) from exc
        self._keys: dict[str, Any] = {}
        self._refresh = RefreshPolicy()
        self.refresh()

    def refresh(self) -> None:
        keys: dict[str, Any] = {}
        try:
            found = list(
                self._session.get_objects(
                    {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
                )
            )
            for key in found:
                label = key.label or ""
                if label.startswith(KEK_ID_PREFIX):
                    keys[check_kek_id(label)] = key
        except PKCS11Error as exc:
            raise KekError(f"cannot list the token's keys: {exc!r}") from exc
        self._keys = keys
        self._refresh.refreshed()

    @property
    def current_id(self) -> str:
        if not self._keys:
            raise KekError(
                "no key-encryption key (an AES key labelled kek-*) on the PKCS#11 token; create"
                " one with `python -m services.webhook.admin rotate-kek`"
            )
        return max(self._keys)

    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def _key(self, kek_id: str) -> Any:
        key = self._keys.get(kek_id)
        if key is None and self._refresh.should_refresh(kek_id):
            self.refresh()
            key = self._keys.get(kek_id)
        if key is None:
            raise UnknownKek(kek_id)
        return key

    def encrypt(self, kek_id: str, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        key = self._key(kek_id)
        try:
            ciphertext: bytes = key.encrypt(
                plaintext,
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, aad, TAG_BYTES * 8),
            )
        except PKCS11Error as exc:
            raise KekError(f"the token refused to encrypt under {kek_id}: {exc!r}") from exc
        return ciphertext

    def decrypt(self, kek_id: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        key = self._key(kek_id)
        try:
            plaintext: bytes = key.decrypt(
                ciphertext,
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, aad, TAG_BYTES * 8),
            )
        except PKCS11Error as exc:
            # Tokens report a tag mismatch in several ways (SoftHSM2: CKR_GENERAL_ERROR).
            raise IntegrityError(
                f"data under key-encryption key {kek_id} does not authenticate ({exc!r})"
            ) from exc
        return plaintext

    def create(self) -> str:
        kek_id = new_kek_id(self._keys)
        try:
            self._session.generate_key(
                KeyType.AES, _KEY_BITS, label=kek_id, store=True, template=_KEK_TEMPLATE
            )
        except PKCS11Error as exc:
            raise KekError(f"the token refused to generate a key: {exc!r}") from exc
        self.refresh()
        return kek_id

    def destroy(self, kek_id: str) -> None:
        key = self._key(check_kek_id(kek_id))
        try:
            key.destroy()
        except PKCS11Error as exc:
            raise KekError(f"the token refused to destroy {kek_id}: {exc!r}") from exc
        self.refresh()

    def close(self) -> None:
        self._keys = {}
        with contextlib.suppress(PKCS11Error):
            self._session.close()
