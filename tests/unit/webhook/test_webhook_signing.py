"""Standard Webhooks signatures: the specification's test vector and the reference library."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from services.webhook.endpoints import new_secret
from services.webhook.signing import secret_key, sign, signature_header, webhook_headers

# From the Standard Webhooks specification (and its reference libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specifications_test_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_reference_library_accepts_our_headers() -> None:
    secret = new_secret()
    body = b'{"type":"lattice.created","timestamp":"2026-01-01T00:00:00.000000Z","data":{}}'
    headers = webhook_headers([secret], "evt_1", int(time.time()), body)

    assert Verifier(secret).verify(body, headers)["type"] == "lattice.created"
    with pytest.raises(WebhookVerificationError):
        Verifier(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(secret).verify(body.replace(b"{}", b'{"x":1}'), headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(secret).verify(body, {**headers, "webhook-id": "evt_2"})


def test_two_live_secrets_give_two_signatures_either_of_which_verifies() -> None:
    new, old = new_secret(), new_secret()
    body = b"{}"
    headers = webhook_headers([new, old], "evt_1", int(time.time()), body)

    assert len(headers["webhook-signature"].split(" ")) == 2
    assert headers["webhook-signature"].split(" ")[0] == sign(
        new, "evt_1", int(headers["webhook-timestamp"]), body
    )
    for secret in (new, old):
        Verifier(secret).verify(body, headers)


def test_secrets_are_whsec_base64() -> None:
    assert len(secret_key(new_secret())) == 32
    for bad in ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_not base64!"):
        with pytest.raises(ValueError, match="signing secret"):
            secret_key(bad)
    with pytest.raises(ValueError, match="secret"):
        signature_header([], "evt_1", 1, b"")
