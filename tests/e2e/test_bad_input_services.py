"""Bad input that reaches the services intact, across auth, lattice and webhook: each is a 400
INVALID_ARGUMENT whose google.rpc.BadRequest names the field, never a 5xx.

A NUL character (JSON "\\u0000") passes the gateway inside a proto string, and
PostgreSQL cannot store it; the services refuse it for every string field of every request
(services/common/request_strings.py). The lattice cases are in test_lattice_bad_input.py too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from tests.e2e.helpers import Tenant, assert_status_body

pytestmark = pytest.mark.e2e

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NUL = "\x00"


@dataclass(frozen=True)
class Bad:
    """One request whose only defect is in `field`; `authenticated` sends the tenant's token."""

    name: str
    route: str
    field: str
    body: dict[str, Any]
    authenticated: bool = True

    def __str__(self) -> str:
        return self.name


def registration(**overrides: Any) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:12]
    return {
        "email": f"nul-{unique}@example.com",
        "password": f"nul passphrase {unique} staple",
        "tenant_name": f"nul-{unique}",
        **overrides,
    }


def webhook(**overrides: Any) -> dict[str, Any]:
    return {"url": "http://127.0.0.1:9/hook", "event_types": ["*"], **overrides}


LATTICE = {"dimensions": 2, "size": 4, "constant": {"value": 1}}

CASES = [
    Bad(
        "register: NUL in email",
        "/v1/auth/register",
        "email",
        registration(email=f"a{NUL}b@example.com"),
        authenticated=False,
    ),
    Bad(
        "register: NUL in tenant_name",
        "/v1/auth/register",
        "tenant_name",
        registration(tenant_name=f"acme{NUL}"),
        authenticated=False,
    ),
    Bad(
        "login: NUL in email",
        "/v1/auth/login",
        "email",
        {"email": f"{NUL}someone@example.com", "password": "whatever it is"},
        authenticated=False,
    ),
    Bad("api key: NUL in name", "/v1/api-keys", "name", {"name": f"ci{NUL}key"}),
    Bad(
        "invitation: NUL in email",
        "/v1/invitations",
        "email",
        {"email": f"grace{NUL}@example.com", "role": "member"},
    ),
    Bad(
        "accept: NUL in token",
        "/v1/invitations/accept",
        "token",
        {"token": f"inv_{NUL}", "password": "whatever it is"},
        authenticated=False,
    ),
    Bad(
        "switch tenant: NUL in tenant_id", "/v1/auth/switch-tenant", "tenant_id", {"tenant_id": NUL}
    ),
    Bad("lattice: NUL in name", "/v1/lattices", "name", {"name": f"a{NUL}b", **LATTICE}),
    Bad(
        "webhook: NUL in description",
        "/v1/webhooks",
        "description",
        webhook(description=f"ops{NUL}"),
    ),
    Bad(
        "webhook: NUL in an event type",
        "/v1/webhooks",
        "event_types[1]",
        webhook(event_types=["lattice.created", f"lattice.deleted{NUL}"]),
    ),
]


def violations(body: dict[str, Any]) -> set[str]:
    return {
        violation["field"]
        for detail in body.get("details", [])
        if detail.get("@type", "").endswith("google.rpc.BadRequest")
        for violation in detail.get("field_violations", [])
    }


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_400_naming_the_field(
    gateway: httpx.Client, tenant: Tenant, case: Bad
) -> None:
    headers = tenant.headers if case.authenticated else {}
    reply = gateway.post(case.route, json=case.body, headers=headers)
    assert_status_body(reply, 400, INVALID_ARGUMENT)
    assert case.field in violations(reply.json()), reply.json()
