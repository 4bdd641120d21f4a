"""What the smoke tests and their fixtures share: settings, names, sessions of the smoke user."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import httpx

# Every object the suite creates is named with this prefix and a UTC timestamp.
PREFIX = "smoke-"
DEFAULT_TIMEOUT_S = 20.0
# A killed run cannot clean up after itself; the next run deletes its objects once they are
# older than this (never younger ones: another run may still be using them).
LEFTOVER_AGE = dt.timedelta(hours=1)
# The plan the smoke tenant is given: enough vertices for the GPU check (docs/deployment/).
SMOKE_PLAN = "professional"


@dataclass(frozen=True)
class SmokeSettings:
    """What the suite runs against, read once from the environment."""

    gateway_url: str
    # The dedicated smoke tenant's user; empty when not configured (those tests skip).
    email: str
    password: str
    # Where the webhook test delivery goes; empty when not configured (that test skips).
    webhook_url: str
    expect_gpu: bool
    timeout_s: float
    # "deployment" (GATEWAY_URL set) or "local stack".
    target: str

    @property
    def has_credentials(self) -> bool:
        return bool(self.email and self.password)


def smoke_name() -> str:
    """A recognisable, unique name: `smoke-20260101T120000Z-1a2b3c`."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{PREFIX}{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Session:
    """A logged-in session of the smoke user."""

    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"}


def log_in(api: httpx.Client, smoke: SmokeSettings) -> Session:
    reply = api.post("/v1/auth/login", json={"email": smoke.email, "password": smoke.password})
    assert reply.status_code == 200, f"log-in of {smoke.email} failed: {reply.text}"
    body = reply.json()
    return Session(body["access_token"], body["refresh_token"])


def log_out(api: httpx.Client, session: Session) -> None:
    """Ends the session and its refresh family (clean-up: a failure here is not the test's)."""
    api.post(
        "/v1/auth/logout", json={"refresh_token": session.refresh_token}, headers=session.headers
    )
