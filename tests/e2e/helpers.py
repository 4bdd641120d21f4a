"""Shared e2e helpers: fresh tenants and assertions on google.rpc.Status bodies."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg


def assert_status_body(reply: httpx.Response, http_status: int, grpc_code: int) -> None:
    """The reply has the given HTTP status and a JSON google.rpc.Status body with that code."""
    assert reply.status_code == http_status, reply.text
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body = reply.json()
    assert isinstance(body["code"], int), body
    assert body["code"] == grpc_code, body
    assert isinstance(body["message"], str), body


@dataclass(frozen=True)
class Tenant:
    """A newly registered owner and its access token."""

    email: str
    password: str
    tenant_id: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"}


def register_and_login(gateway: httpx.Client) -> Tenant:
    """A new tenant (its own data, so tests never interfere) and a token for its owner."""
    unique = uuid.uuid4().hex[:12]
    email = f"e2e-{unique}@example.com"
    password = f"e2e passphrase {unique} staple"
    reply = gateway.post(
        "/v1/auth/register",
        json={"email": email, "password": password, "tenant_name": f"e2e-{unique}"},
    )
    assert reply.status_code == 200, reply.text
    tenant_id = reply.json()["tenant"]["id"]
    reply = gateway.post("/v1/auth/login", json={"email": email, "password": password})
    assert reply.status_code == 200, reply.text
    return Tenant(email, password, tenant_id, reply.json()["access_token"])


BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def assert_bad_request(reply: httpx.Response, field: str) -> None:
    """A 400 INVALID_ARGUMENT shaped like the services' own: a message "<field>: <what is
    wrong>" and a google.rpc.BadRequest detail with a violation naming the field."""
    assert_status_body(reply, 400, 3)
    body = reply.json()
    message = body["message"]
    assert message.startswith(f"{field}: "), body
    assert message == message.strip(), body  # no trailing newline from the transcoder
    violations = [
        violation
        for detail in body["details"]
        if detail["@type"] == BAD_REQUEST
        for violation in detail["field_violations"]
    ]
    assert [violation["field"] for violation in violations] == [field], body
    assert violations[0]["description"], body


def set_plan(stack: Any, tenant: Tenant, plan: str) -> None:
    """Moves the tenant to `plan`, as an operator would (straight in the database)."""
    with (
        psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as admin,
        admin.transaction(),
    ):
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant.tenant_id,))
        admin.execute("UPDATE tenants SET plan = %s WHERE id = %s", (plan, tenant.tenant_id))


def eventually(condition: Callable[[], object], within: float, what: str) -> None:
    """Polls `condition` until it is truthy; fails naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.05)


def log_in(gateway: httpx.Client, email: str, password: str, tenant_id: str = "") -> Any:
    """A token pair (the JSON answer of log-in), for `tenant_id` or the default tenant."""
    body = {"email": email, "password": password}
    if tenant_id:
        body["tenant_id"] = tenant_id
    reply = gateway.post("/v1/auth/login", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def invite(gateway: httpx.Client, inviter: Tenant, email: str = "", role: str = "member") -> Any:
    """The answer of an invitation ({invitation, token}) to `email` (a fresh one when empty)."""
    email = email or f"e2e-invitee-{uuid.uuid4().hex[:12]}@example.com"
    reply = gateway.post(
        "/v1/invitations", json={"email": email, "role": role}, headers=inviter.headers
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def join(gateway: httpx.Client, owner: Tenant, role: str = "member") -> Tenant:
    """A new person invited into `owner`'s tenant with `role`, signed in there."""
    invited = invite(gateway, owner, role=role)
    email = invited["invitation"]["email"]
    password = f"e2e invitee {uuid.uuid4().hex[:12]} staple"
    reply = gateway.post(
        "/v1/invitations/accept", json={"token": invited["token"], "password": password}
    )
    assert reply.status_code == 200, reply.text
    pair = log_in(gateway, email, password, owner.tenant_id)
    return Tenant(email, password, owner.tenant_id, pair["access_token"])


def user_id(gateway: httpx.Client, who: Tenant) -> str:
    """The user id of a signed-in person."""
    reply = gateway.get("/v1/users/me", headers=who.headers)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])
