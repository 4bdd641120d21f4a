"""Sealed webhook secrets: bound to their endpoint, and which form of a row's secret signs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.common.keys.base import IntegrityError
from services.common.keys.files import FileKekRing
from services.webhook.endpoints import new_secret
from services.webhook.secret_box import SecretBox

TENANT, OTHER_TENANT = (
    "7c0e6a52-1f7e-4a55-9a59-3f7f1c1b2d10",
    "b1c7c0f8-3c3e-4d8a-9f57-0d3c2b1a0e99",
)
WEBHOOK, OTHER_WEBHOOK = (
    "0b6d8f1e-27a4-4c1e-8a55-2f3a1d9c7e01",
    "5f0c2e7d-9b1a-4f3e-8c6d-1a2b3c4d5e6f",
)


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    ring = FileKekRing(tmp_path)
    ring.create()
    return SecretBox(ring)


def test_a_sealed_secret_opens_for_its_own_endpoint_only(box: SecretBox) -> None:
    secret = new_secret()
    sealed = box.seal(TENANT, WEBHOOK, secret)

    assert box.open(TENANT, WEBHOOK, sealed) == secret
    assert secret.encode() not in sealed
    for tenant_id, webhook_id in ((TENANT, OTHER_WEBHOOK), (OTHER_TENANT, WEBHOOK)):
        with pytest.raises(IntegrityError):
            box.open(tenant_id, webhook_id, sealed)


def test_the_current_secret_signs_first_and_plaintext_wins_where_a_row_has_both(
    box: SecretBox,
) -> None:
    current, previous, stale = new_secret(), new_secret(), new_secret()
    sealed_current = box.seal(TENANT, WEBHOOK, current)
    sealed_previous = box.seal(TENANT, WEBHOOK, previous)

    def live(**row: object) -> tuple[str, ...]:
        return box.live_secrets(TENANT, WEBHOOK, **row)  # type: ignore[arg-type]

    assert live(current=None, current_sealed=sealed_current) == (current,)
    assert live(current=None, current_sealed=sealed_current, previous_sealed=sealed_previous) == (
        current,
        previous,
    )
    # Not yet sealed (encrypt-secrets has not run): the plaintext columns sign.
    assert live(current=current, current_sealed=None, previous=previous) == (current, previous)
    # Only the release before this one writes plaintext over a sealed secret: it is newer.
    assert live(current=current, current_sealed=box.seal(TENANT, WEBHOOK, stale)) == (current,)


def test_a_secret_that_will_not_open_leaves_nothing_to_sign_with(
    box: SecretBox, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = box.seal(TENANT, OTHER_WEBHOOK, new_secret())
    with caplog.at_level(logging.ERROR, "catalytic.webhook.secrets"):
        assert box.live_secrets(TENANT, WEBHOOK, current=None, current_sealed=elsewhere) == ()
        # A previous secret that will not open is dropped; the current one still signs.
        current = new_secret()
        assert box.live_secrets(
            TENANT,
            WEBHOOK,
            current=None,
            current_sealed=box.seal(TENANT, WEBHOOK, current),
            previous_sealed=elsewhere,
        ) == (current,)
    assert "cannot be opened" in caplog.text
