"""API keys through the gateway: created once, accepted by every service, revoked at once."""

from __future__ import annotations

import grpc
import httpx
import pytest

from tests.e2e.helpers import Tenant, assert_status_body, register_and_login

pytestmark = pytest.mark.e2e

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]
LATTICE = {"name": "by-key", "dimensions": 2, "size": 4, "constant": {"value": 1}}


def create_key(gateway: httpx.Client, tenant: Tenant, name: str = "ci") -> dict[str, str]:
    reply = gateway.post("/v1/api-keys", json={"name": name}, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    body: dict[str, str] = reply.json()
    return body


def test_create_is_the_only_time_the_key_is_shown(gateway: httpx.Client, tenant: Tenant) -> None:
    created = create_key(gateway, tenant)
    assert set(created) == {"id", "name", "key", "prefix", "created_at", "role"}
    assert created["role"] == "member"  # the default
    assert created["key"].startswith(f"cat_{created['prefix']}_")
    reply = gateway.get("/v1/api-keys", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    [listed] = reply.json()["api_keys"]
    assert listed["id"] == created["id"]
    assert listed["prefix"] == created["prefix"]
    assert "key" not in listed
    assert created["key"] not in reply.text
    assert created["key"][17:] not in reply.text


def test_a_key_works_on_every_service_until_deleted(gateway: httpx.Client, tenant: Tenant) -> None:
    created = create_key(gateway, tenant)
    key = {"x-api-key": created["key"]}

    me = gateway.get("/v1/users/me", headers=key)
    assert me.status_code == 200, me.text
    assert me.json()["tenant_id"] == tenant.tenant_id
    assert me.json()["email"] == tenant.email  # the key's creator
    made = gateway.post("/v1/lattices", json=LATTICE, headers=key)
    assert made.status_code == 200, made.text
    listed = gateway.get("/v1/lattices", headers=tenant.headers)
    assert [item["id"] for item in listed.json()["lattices"]] == [made.json()["id"]]
    hooks = gateway.get("/v1/webhooks", headers=key)
    assert hooks.status_code == 200, hooks.text

    reply = gateway.delete(f"/v1/api-keys/{created['id']}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {}
    for route in ("/v1/users/me", "/v1/lattices", "/v1/webhooks"):
        assert_status_body(gateway.get(route, headers=key), 401, UNAUTHENTICATED)


def test_forged_keys_and_mixed_credentials_are_refused(
    gateway: httpx.Client, tenant: Tenant
) -> None:
    created = create_key(gateway, tenant)
    prefix_only = f"cat_{created['prefix']}_"
    wrong_secret = prefix_only + ("A" if created["key"][17] != "A" else "B") + created["key"][18:]
    for forged in (prefix_only, wrong_secret, created["key"] + "x", "cat_anything"):
        reply = gateway.get("/v1/lattices", headers={"x-api-key": forged})
        assert_status_body(reply, 401, UNAUTHENTICATED)
    both = {**tenant.headers, "x-api-key": created["key"]}
    assert_status_body(
        gateway.get("/v1/lattices", headers=both), 400, grpc.StatusCode.INVALID_ARGUMENT.value[0]
    )


def test_keys_of_another_tenant_are_not_found(gateway: httpx.Client, tenant: Tenant) -> None:
    created = create_key(gateway, tenant)
    other = register_and_login(gateway)
    reply = gateway.delete(f"/v1/api-keys/{created['id']}", headers=other.headers)
    assert_status_body(reply, 404, grpc.StatusCode.NOT_FOUND.value[0])
    reply = gateway.delete("/v1/api-keys/not-a-uuid", headers=tenant.headers)
    assert_status_body(reply, 400, grpc.StatusCode.INVALID_ARGUMENT.value[0])
    assert gateway.get("/v1/api-keys", headers=other.headers).json().get("api_keys", []) == []
