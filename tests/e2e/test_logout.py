"""Logout through the gateway: the access token stops working in all three services at once."""

from __future__ import annotations

import grpc
import httpx
import pytest

from tests.e2e.helpers import Tenant, assert_status_body

pytestmark = pytest.mark.e2e

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]
# One authenticated route per service.
ROUTES = ("/v1/users/me", "/v1/lattices", "/v1/webhooks")


def session(gateway: httpx.Client, tenant: Tenant) -> dict[str, str]:
    """A fresh log-in of the tenant's owner: access and refresh token."""
    reply = gateway.post(
        "/v1/auth/login", json={"email": tenant.email, "password": tenant.password}
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, str] = reply.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_logged_out_token_is_401_everywhere(gateway: httpx.Client, tenant: Tenant) -> None:
    tokens = session(gateway, tenant)
    for route in ROUTES:
        reply = gateway.get(route, headers=bearer(tokens["access_token"]))
        assert reply.status_code == 200, (route, reply.text)

    reply = gateway.post(
        "/v1/auth/logout",
        json={"refresh_token": tokens["refresh_token"]},
        headers=bearer(tokens["access_token"]),
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {}

    for route in ROUTES:
        reply = gateway.get(route, headers=bearer(tokens["access_token"]))
        assert_status_body(reply, 401, UNAUTHENTICATED)
    reply = gateway.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_status_body(reply, 401, UNAUTHENTICATED)
    # Other sessions of the same user are not logged out.
    reply = gateway.get("/v1/users/me", headers=tenant.headers)
    assert reply.status_code == 200, reply.text


def test_refresh_then_logout_without_a_refresh_token(gateway: httpx.Client, tenant: Tenant) -> None:
    tokens = session(gateway, tenant)
    reply = gateway.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert reply.status_code == 200, reply.text
    renewed = reply.json()
    assert renewed["token_type"] == "Bearer"
    assert renewed["refresh_token"] != tokens["refresh_token"]

    reply = gateway.post("/v1/auth/logout", json={}, headers=bearer(renewed["access_token"]))
    assert reply.status_code == 200, reply.text
    assert_status_body(
        gateway.get("/v1/lattices", headers=bearer(renewed["access_token"])), 401, UNAUTHENTICATED
    )
    # The refresh family was not named, so it lives on.
    reply = gateway.post("/v1/auth/refresh", json={"refresh_token": renewed["refresh_token"]})
    assert reply.status_code == 200, reply.text


def test_logout_needs_an_access_token(gateway: httpx.Client) -> None:
    assert_status_body(gateway.post("/v1/auth/logout", json={}), 401, UNAUTHENTICATED)
