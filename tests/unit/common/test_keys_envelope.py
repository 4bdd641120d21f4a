"""Envelope encryption under both KEK providers: a key directory and a SoftHSM2 token."""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.keys import envelope
from services.common.keys.base import IntegrityError, KekError, KekRing, UnknownKek
from services.common.keys.envelope import Sealed, SealedFormatError
from services.common.keys.files import FileKekRing
from tests.unit.common.softhsm import clear_keks, softhsm_token

CONTEXT = b"catalytic/webhook-secret/tenant-a/endpoint-1"
SECRET = b"whsec_" + base64.b64encode(b"\x07" * 32)


@pytest.fixture(params=["file", "pkcs11"])
def ring(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KekRing]:
    """An empty ring of each provider."""
    if request.param == "file":
        yield FileKekRing(tmp_path / "kek")
        return
    token = softhsm_token()
    clear_keks(token)
    hsm = token.ring()
    try:
        yield hsm
    finally:
        hsm.close()
        clear_keks(token)


def test_an_empty_ring_has_no_current_kek_and_says_how_to_make_one(ring: KekRing) -> None:
    with pytest.raises(KekError, match="rotate-kek"):
        envelope.seal(ring, SECRET, CONTEXT)


def test_sealed_values_open_only_in_their_own_context(ring: KekRing) -> None:
    ring.create()
    blob = envelope.seal(ring, SECRET, CONTEXT)

    assert envelope.unseal(ring, blob, CONTEXT) == SECRET
    assert SECRET not in blob
    assert base64.b64encode(SECRET) not in blob
    # Copied to another endpoint's row, it does not open.
    with pytest.raises(IntegrityError):
        envelope.unseal(ring, blob, b"catalytic/webhook-secret/tenant-a/endpoint-2")


def test_each_seal_has_its_own_data_key_and_nonces(ring: KekRing) -> None:
    ring.create()
    first, second = (Sealed.parse(envelope.seal(ring, SECRET, CONTEXT)) for _ in range(2))
    assert first.wrapped_key != second.wrapped_key
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


@pytest.mark.parametrize("part", ["wrap_nonce", "wrapped_key", "nonce", "ciphertext"])
def test_a_changed_byte_anywhere_is_refused(ring: KekRing, part: str) -> None:
    ring.create()
    sealed = Sealed.parse(envelope.seal(ring, SECRET, CONTEXT))
    value = bytearray(getattr(sealed, part))
    value[0] ^= 1
    changed = Sealed(**{**sealed.__dict__, part: bytes(value)}).to_bytes()
    with pytest.raises(IntegrityError):
        envelope.unseal(ring, changed, CONTEXT)


def test_rotation_rewraps_the_data_key_and_keeps_the_ciphertext(ring: KekRing) -> None:
    old = ring.create()
    blob = envelope.seal(ring, SECRET, CONTEXT)
    new = ring.create()
    assert ring.current_id == new
    assert ring.ids() == (old, new)
    # Until rewrapped, a value sealed under the old KEK still opens.
    assert envelope.unseal(ring, blob, CONTEXT) == SECRET

    rewrapped = envelope.rewrap(ring, blob, CONTEXT)

    before, after = Sealed.parse(blob), Sealed.parse(rewrapped)
    assert (before.kek_id, after.kek_id) == (old, new)
    assert after.ciphertext == before.ciphertext
    assert after.nonce == before.nonce
    assert after.wrapped_key != before.wrapped_key
    assert envelope.rewrap(ring, rewrapped, CONTEXT) == rewrapped  # already current: unchanged
    ring.destroy(old)
    assert envelope.unseal(ring, rewrapped, CONTEXT) == SECRET
    with pytest.raises(UnknownKek) as lost:
        envelope.unseal(ring, blob, CONTEXT)
    assert lost.value.kek_id == old


def test_rewrap_refuses_a_value_that_does_not_open(ring: KekRing) -> None:
    ring.create()
    blob = envelope.seal(ring, SECRET, CONTEXT)
    ring.create()
    with pytest.raises(IntegrityError):
        envelope.rewrap(ring, blob, b"another context")


@pytest.mark.parametrize(
    "blob", [b"", b"\x02\x03kek", b"\x01\x03kek", b"\x01\x03k/k" + b"\x00" * 100]
)
def test_bytes_that_are_not_a_sealed_value_are_refused(blob: bytes) -> None:
    with pytest.raises(SealedFormatError):
        Sealed.parse(blob)


def test_key_files_are_private_and_a_new_file_is_found_without_reopening(tmp_path: Path) -> None:
    directory = tmp_path / "kek"
    service = FileKekRing(directory)
    admin = FileKekRing(directory)
    first = admin.create()
    assert stat.S_IMODE((directory / f"{first}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    blob = envelope.seal(admin, SECRET, CONTEXT)

    # The service opened the directory before the KEK existed: meeting its id, it looks again.
    assert envelope.unseal(service, blob, CONTEXT) == SECRET
    assert service.current_id == first


def test_a_key_file_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kek-short.key").write_text(base64.b64encode(b"x" * 16).decode())
    with pytest.raises(KekError, match="16 bytes"):
        FileKekRing(tmp_path)


def test_hsm_keys_are_generated_sensitive_and_not_extractable() -> None:
    from pkcs11 import Attribute, KeyType, ObjectClass

    token = softhsm_token()
    clear_keks(token)
    ring = token.ring()
    try:
        kek_id = ring.create()
        session = ring._session
        [key] = session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
        )
        assert key.label == kek_id
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.TOKEN] is True  # kept in the token, not the session
    finally:
        ring.close()
        clear_keks(token)


def test_a_new_kek_id_sorts_after_one_made_the_same_second_whatever_its_suffix() -> None:
    """The latest id may end in ffffffff: no suffix drawn in that second sorts after it, so the
    new id waits for the next second (this failed 1 run in ~40 before)."""
    import time

    from services.common.keys.base import KEK_ID_PREFIX, new_kek_id

    latest = f"{KEK_ID_PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-ffffffff"
    assert new_kek_id([latest]) > latest
