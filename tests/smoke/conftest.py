"""Smoke-suite settings: a deployment named by GATEWAY_URL, or the local session stack without it.

Against a deployment (`make smoke`) everything comes from the environment and nothing local is
started. Without GATEWAY_URL (`make test`) the session `stack` fixture's gateway is used, a smoke
tenant is registered there as an operator would (docs/deployment/smoke-tests.md), and a loopback
receiver stands in for SMOKE_WEBHOOK_URL.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.helpers import Tenant, set_plan
from tests.smoke.support import (
    DEFAULT_TIMEOUT_S,
    LEFTOVER_AGE,
    PREFIX,
    SMOKE_PLAN,
    Session,
    SmokeSettings,
    log_in,
    log_out,
)
from tests.unit.webhook.receiver import Receiver, running_receiver


def _timeout_s() -> float:
    raw = os.environ.get("SMOKE_TIMEOUT_S", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise pytest.UsageError(f"SMOKE_TIMEOUT_S={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise pytest.UsageError(f"SMOKE_TIMEOUT_S={raw!r} must be positive")
    return value


@pytest.fixture(scope="session")
def local_receiver() -> Iterator[Receiver | None]:
    """The loopback receiver standing in for SMOKE_WEBHOOK_URL on the local stack; None against
    a deployment (its receiver may be out of the suite's reach: the tests read the API's log)."""
    if os.environ.get("GATEWAY_URL"):
        yield None
        return
    with running_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def smoke(request: pytest.FixtureRequest, local_receiver: Receiver | None) -> SmokeSettings:
    timeout_s = _timeout_s()
    expect_gpu = os.environ.get("SMOKE_EXPECT_GPU", "") == "1"
    gateway_url = os.environ.get("GATEWAY_URL", "").rstrip("/")
    if gateway_url:
        return SmokeSettings(
            gateway_url=gateway_url,
            email=os.environ.get("SMOKE_EMAIL", ""),
            password=os.environ.get("SMOKE_PASSWORD", ""),
            webhook_url=os.environ.get("SMOKE_WEBHOOK_URL", ""),
            expect_gpu=expect_gpu,
            timeout_s=timeout_s,
            target="deployment",
        )
    # Only requested here: against a deployment no local stack is ever started.
    stack = request.getfixturevalue("stack")
    assert local_receiver is not None
    email, password = register_smoke_tenant(stack.gateway_url, stack)
    return SmokeSettings(
        gateway_url=stack.gateway_url,
        email=email,
        password=password,
        webhook_url=local_receiver.url("/smoke"),
        expect_gpu=expect_gpu,
        timeout_s=timeout_s,
        target="local stack",
    )


def register_smoke_tenant(gateway_url: str, stack: object) -> tuple[str, str]:
    """Registers a smoke tenant through the API and gives it SMOKE_PLAN, as the operator does
    once per deployment (docs/deployment/smoke-tests.md)."""
    unique = uuid.uuid4().hex[:12]
    email = f"smoke-{unique}@example.com"
    password = f"smoke passphrase {unique} staple"
    with httpx.Client(base_url=gateway_url, timeout=10, trust_env=False) as client:
        reply = client.post(
            "/v1/auth/register",
            json={"email": email, "password": password, "tenant_name": f"smoke-{unique}"},
        )
    assert reply.status_code == 200, reply.text
    tenant_id = reply.json()["tenant"]["id"]
    set_plan(stack, Tenant(email, password, tenant_id, access_token=""), SMOKE_PLAN)
    return email, password


@pytest.fixture(scope="session")
def api(smoke: SmokeSettings) -> Iterator[httpx.Client]:
    """HTTP to the gateway. Against a deployment the environment's proxy settings apply (that
    may be how an operator reaches it); the local stack is reached directly."""
    with httpx.Client(
        base_url=smoke.gateway_url,
        timeout=smoke.timeout_s,
        trust_env=smoke.target == "deployment",
    ) as client:
        yield client


@pytest.fixture(scope="session")
def user(api: httpx.Client, smoke: SmokeSettings) -> Iterator[Session]:
    """One session shared by the tests that only need a token (one log-in per run)."""
    if not smoke.has_credentials:
        pytest.skip("SMOKE_EMAIL and SMOKE_PASSWORD are not set (the smoke tenant's user)")
    session = log_in(api, smoke)
    sweep_leftovers(api, session)
    try:
        yield session
    finally:
        log_out(api, session)


def sweep_leftovers(api: httpx.Client, session: Session) -> None:
    """Deletes `smoke-` objects older than LEFTOVER_AGE that a killed run left behind."""
    cutoff = dt.datetime.now(dt.UTC) - LEFTOVER_AGE

    def stale(name: str, created_at: str) -> bool:
        created = dt.datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        return name.startswith(PREFIX) and created < cutoff

    for collection, key, name_field in (
        ("lattices", "lattices", "name"),
        ("webhooks", "webhooks", "description"),
    ):
        reply = api.get(f"/v1/{collection}", params={"page_size": 100}, headers=session.headers)
        if reply.status_code != 200:
            continue  # the tests themselves report an unreachable service
        for item in reply.json().get(key, []):
            if stale(item.get(name_field, ""), item["created_at"]):
                print(f"[smoke] deleting a leftover {collection[:-1]} {item['id']}")
                api.delete(f"/v1/{collection}/{item['id']}", headers=session.headers)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line for an operator: the smoke suite's outcome and what it ran against."""
    counts = {
        outcome: sum(
            1
            for report in terminalreporter.stats.get(outcome, [])
            if getattr(report, "nodeid", "").startswith("tests/smoke/")
            and (outcome == "error" or getattr(report, "when", "call") in ("call", "setup"))
        )
        for outcome in ("passed", "failed", "skipped", "error")
    }
    if not any(counts.values()):
        return
    target = os.environ.get("GATEWAY_URL") or "the local stack"
    summary = ", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count)
    terminalreporter.write_line(f"smoke: {summary} against {target}")
