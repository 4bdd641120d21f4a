"""The gRPC → HTTP status table of docs/api/errors.md is what the gateway answers.

Each case makes a service fail with one gRPC code through the gateway; the HTTP status must be
the one the published table gives that code (the table is read from the Markdown itself).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import grpc
import httpx
import pytest

from gateway import apidocs, mdblocks
from tests.e2e.helpers import Tenant, assert_status_body

pytestmark = pytest.mark.e2e

Case = Callable[[httpx.Client, Tenant], httpx.Response]


def documented_statuses() -> dict[str, int]:
    """gRPC code name -> HTTP status, from the generated table in docs/api/errors.md."""
    text = (apidocs.DOCS_DIR / apidocs.ERRORS_PAGE).read_text()
    start, stop = mdblocks.begin("status table"), mdblocks.end("status table")
    table = text[text.index(start) : text.index(stop)]
    rows = re.findall(r"^\| \d+ `([A-Z_]+)` \| (\d{3}) \|", table, re.MULTILINE)
    assert rows, "no status table in docs/api/errors.md"
    return {name: int(status) for name, status in rows}


def _api_key(gateway: httpx.Client, tenant: Tenant) -> dict[str, str]:
    reply = gateway.post("/v1/api-keys", json={"name": "status-table"}, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return {"x-api-key": reply.json()["key"]}


def _lattice(gateway: httpx.Client, tenant: Tenant) -> str:
    body = {"name": "status-table", "dimensions": 2, "size": 4, "constant": {"value": 1}}
    reply = gateway.post("/v1/lattices", json=body, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


CASES: dict[grpc.StatusCode, Case] = {
    grpc.StatusCode.INVALID_ARGUMENT: lambda gw, t: gw.post(
        "/v1/auth/register",
        json={"email": f"{uuid.uuid4().hex}@example.com", "password": "short", "tenant_name": "x"},
    ),
    grpc.StatusCode.UNAUTHENTICATED: lambda gw, t: gw.get("/v1/users/me"),
    grpc.StatusCode.NOT_FOUND: lambda gw, t: gw.get(
        f"/v1/lattices/{uuid.uuid4()}", headers=t.headers
    ),
    grpc.StatusCode.ALREADY_EXISTS: lambda gw, t: gw.post(
        "/v1/auth/register",
        json={"email": t.email, "password": t.password, "tenant_name": "again"},
    ),
    grpc.StatusCode.PERMISSION_DENIED: lambda gw, t: gw.post(
        "/v1/api-keys", json={"name": "by a key"}, headers=_api_key(gw, t)
    ),
    grpc.StatusCode.FAILED_PRECONDITION: lambda gw, t: gw.post(
        "/v1/auth/logout", json={}, headers=_api_key(gw, t)
    ),
    grpc.StatusCode.ABORTED: lambda gw, t: gw.post(
        f"/v1/lattices/{_lattice(gw, t)}/transform",
        json={"flip": {"axis": 0}, "if_version": "7"},
        headers=t.headers,
    ),
    # Over the free plan's vertices per lattice: refused before anything is allocated.
    grpc.StatusCode.RESOURCE_EXHAUSTED: lambda gw, t: gw.post(
        "/v1/lattices",
        json={"name": "too big", "dimensions": 3, "size": 100, "constant": {"value": 1}},
        headers=t.headers,
    ),
}


@pytest.mark.parametrize("code", list(CASES), ids=lambda code: code.name)
def test_documented_http_status_is_what_the_gateway_answers(
    gateway: httpx.Client, tenant: Tenant, code: grpc.StatusCode
) -> None:
    documented = documented_statuses()
    reply = CASES[code](gateway, tenant)
    assert_status_body(reply, documented[code.name], code.value[0])


def test_every_case_is_a_row_of_the_table() -> None:
    assert set(documented_statuses()) >= {code.name for code in CASES}
