"""The contract every KEK provider meets: AES-256-GCM under a named key that never leaves it.

A ring holds one or more KEKs, each named by an id. New data keys are wrapped with the
`current` one (the last id in name order: generated ids sort by the time they were made);
the others stay usable for unwrapping, so a KEK can be rotated while secrets wrapped by the
old one are still being rewrapped (ADR 56).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable
from typing import Protocol

# What an id may look like: it is a file name, an HSM label and a field of every sealed blob.
KEK_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KEK_ID_PREFIX = "kek-"
KEK_BYTES = 32
# A KEK never wraps more than a few million data keys, far below the 2**32 random 96-bit
# nonces NIST SP 800-38D allows under one key.
NONCE_BYTES = 12
TAG_BYTES = 16
REFRESH_INTERVAL_S = 5.0
_SUFFIX = re.compile(r"[0-9a-f]{8}")
_SUFFIX_SPACE = 1 << 32


class KekError(Exception):
    """A key-encryption key is missing, or an operation under it failed."""


class UnknownKek(KekError):
    """No KEK with this id is in the ring (lost, retired, or not yet visible here)."""

    def __init__(self, kek_id: str) -> None:
        super().__init__(f"no key-encryption key {kek_id!r} in the ring")
        self.kek_id = kek_id


class IntegrityError(KekError):
    """The ciphertext, its nonce or its associated data were changed, or the key is wrong."""


def sortable_id(prefix: str, existing: Iterable[str] = ()) -> str:
    """`<prefix><UTC time to the second>-<8 hex digits>`, sorting after every id in `existing`.

    Ids sort by the time they were made, so "the last in name order" is the newest. Made in
    the same second as the latest, the suffix is drawn above the latest's; when the latest's is
    ffffffff, none is, and the id waits for the next second, whose ids sort after it whatever
    their suffix. ValueError when no id can sort after the latest (one from the future, or a
    name made by hand).
    """
    latest = max(existing, default="")
    for second_try in (False, True):
        if second_try:
            time.sleep(1.0 - time.time() % 1.0 + 0.01)
        stamped = f"{prefix}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-"
        floor = 0
        if latest.startswith(stamped):
            suffix = latest[len(stamped) :]
            floor = int(suffix, 16) + 1 if _SUFFIX.fullmatch(suffix) else _SUFFIX_SPACE
            if floor >= _SUFFIX_SPACE:
                continue
        new_id = f"{stamped}{floor + secrets.randbelow(_SUFFIX_SPACE - floor):08x}"
        if new_id > latest:
            return new_id
        break  # the latest is from the future or made by hand: a second later is no better
    raise ValueError(f"a new id would sort before {latest}; check the clock and the names")


def new_kek_id(existing: Iterable[str] = ()) -> str:
    """A fresh id that sorts after every id in `existing` (so it becomes current)."""
    existing = list(existing)  # read twice: once more for the message
    try:
        return sortable_id(KEK_ID_PREFIX, existing)
    except ValueError:
        raise KekError(
            f"a new key-encryption key id would sort before {max(existing)}; check the clock"
        ) from None


class RefreshPolicy:
    """When a ring that meets an id it does not hold reads its keys again: at once for an id
    not missed before (a KEK added by a rotation since start-up), then at most every
    REFRESH_INTERVAL_S, so a lost KEK does not make every attempt rescan the provider."""

    def __init__(self) -> None:
        self._missed: set[str] = set()
        self._at = 0.0

    def refreshed(self) -> None:
        self._at = time.monotonic()

    def should_refresh(self, kek_id: str) -> bool:
        first = kek_id not in self._missed
        self._missed.add(kek_id)
        return first or time.monotonic() - self._at >= REFRESH_INTERVAL_S


def check_kek_id(kek_id: str) -> str:
    """The id, or ValueError when it could not be a file name and label of ours."""
    if not KEK_ID_PATTERN.fullmatch(kek_id):
        raise ValueError(f"{kek_id!r} is not a key-encryption key id")
    return kek_id


class KekRing(Protocol):
    """The KEKs one provider holds (a key directory, or a PKCS#11 token)."""

    @property
    def current_id(self) -> str:
        """The KEK that wraps new data keys."""

    def ids(self) -> tuple[str, ...]:
        """Every KEK in the ring, in name order (the current one last)."""

    def encrypt(self, kek_id: str, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM ciphertext with its 16-byte tag appended; UnknownKek when absent."""

    def decrypt(self, kek_id: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """The plaintext; UnknownKek when absent, IntegrityError when it does not authenticate."""

    def refresh(self) -> None:
        """Reads the provider's keys again (a KEK added or removed since it was opened)."""

    def create(self) -> str:
        """Generates a new KEK inside the provider, which becomes current; returns its id."""

    def destroy(self, kek_id: str) -> None:
        """Deletes the KEK for good; whatever it wrapped can no longer be opened."""

    def close(self) -> None:
        """Releases what the ring holds open (an HSM session)."""
