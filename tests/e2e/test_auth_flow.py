"""The whole session life cycle through the gateway: register, log in, refresh, reuse, log out.

Written against the contract (ARCHITECTURE.md §3): a spent refresh token presented again revokes
its whole family, and a logged-out access token is refused by every service at once.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from tests.e2e.helpers import assert_status_body

pytestmark = pytest.mark.e2e

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]
# One authenticated route of each service: a revoked token must fail at all of them.
ROUTES = ("/v1/users/me", "/v1/lattices", "/v1/webhooks")


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    user_id: str
    tenant_id: str


@dataclass(frozen=True)
class Pair:
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"}


@pytest.fixture
def client(stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=10, trust_env=False) as c:
        yield c


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def register(client: httpx.Client) -> Account:
    unique = uuid.uuid4().hex[:12]
    email, password = f"flow-{unique}@example.com", f"flow passphrase {unique} staple"
    reply = client.post(
        "/v1/auth/register",
        json={"email": email, "password": password, "tenant_name": f"flow-{unique}"},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    user, tenant = body["user"], body["tenant"]
    assert user["email"] == email
    assert user["role"] == "owner"
    assert user["tenant_id"] == tenant["id"]
    assert tenant["plan"] == "free"  # DEFAULT_PLAN of the test stack
    return Account(email, password, user["id"], tenant["id"])


def login(client: httpx.Client, account: Account) -> Pair:
    reply = client.post(
        "/v1/auth/login", json={"email": account.email, "password": account.password}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["token_type"] == "Bearer"
    assert body["refresh_token"]
    assert body["expires_in"] > 0
    return Pair(body["access_token"], body["refresh_token"])


def refresh(client: httpx.Client, refresh_token: str) -> httpx.Response:
    return client.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


def logout(client: httpx.Client, pair: Pair, refresh_token: str | None) -> httpx.Response:
    body = {} if refresh_token is None else {"refresh_token": refresh_token}
    return client.post("/v1/auth/logout", json=body, headers=pair.headers)


def new_pair(reply: httpx.Response) -> Pair:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    return Pair(body["access_token"], body["refresh_token"])


def assert_rejected_everywhere(client: httpx.Client, pair: Pair) -> None:
    for route in ROUTES:
        assert_status_body(client.get(route, headers=pair.headers), 401, UNAUTHENTICATED)


def assert_accepted_everywhere(client: httpx.Client, pair: Pair) -> None:
    for route in ROUTES:
        reply = client.get(route, headers=pair.headers)
        assert reply.status_code == 200, f"{route}: {reply.text}"


def test_register_login_me_refresh_reuse_logout(client: httpx.Client) -> None:
    account = register(client)
    first = login(client, account)

    me = client.get("/v1/users/me", headers=first.headers)
    assert me.status_code == 200, me.text
    assert {k: me.json()[k] for k in ("id", "email", "tenant_id", "role")} == {
        "id": account.user_id,
        "email": account.email,
        "tenant_id": account.tenant_id,
        "role": "owner",
    }
    assert me.json()["created_at"].endswith("Z")

    # Refresh: a new pair for the same identity; the presented refresh token is spent.
    second = new_pair(refresh(client, first.refresh_token))
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert claims_of(second.access_token)["jti"] != claims_of(first.access_token)["jti"]
    for claim in ("sub", "tenant_id", "role"):
        assert claims_of(second.access_token)[claim] == claims_of(first.access_token)[claim]
    assert_accepted_everywhere(client, second)

    # Reuse of the spent token: refused, and its whole family is revoked with it.
    assert_status_body(refresh(client, first.refresh_token), 401, UNAUTHENTICATED)
    assert_status_body(refresh(client, second.refresh_token), 401, UNAUTHENTICATED)

    # Logout: the access token stops working at every service at once.
    reply = logout(client, second, None)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {}
    assert_rejected_everywhere(client, second)


def test_logout_with_a_refresh_token_revokes_its_family(client: httpx.Client) -> None:
    account = register(client)
    first = login(client, account)
    second = new_pair(refresh(client, first.refresh_token))

    reply = logout(client, second, second.refresh_token)

    assert reply.status_code == 200, reply.text
    assert_rejected_everywhere(client, second)
    assert_status_body(refresh(client, second.refresh_token), 401, UNAUTHENTICATED)


def test_logout_ends_only_its_own_session(client: httpx.Client) -> None:
    account = register(client)
    laptop, phone = login(client, account), login(client, account)

    reply = logout(client, laptop, laptop.refresh_token)

    assert reply.status_code == 200, reply.text
    assert_rejected_everywhere(client, laptop)
    assert_accepted_everywhere(client, phone)
    new_pair(refresh(client, phone.refresh_token))


def test_logout_needs_an_access_token(client: httpx.Client) -> None:
    reply = client.post("/v1/auth/logout", json={})
    assert_status_body(reply, 401, UNAUTHENTICATED)


@pytest.mark.parametrize(
    "token",
    ["rt_" + "A" * 43, "not-a-refresh-token", "x" * 1000],
    ids=["well-formed-unknown", "garbage", "over-long"],
)
def test_an_unknown_refresh_token_is_401(client: httpx.Client, token: str) -> None:
    assert_status_body(refresh(client, token), 401, UNAUTHENTICATED)


def test_an_access_token_is_not_a_refresh_token(client: httpx.Client) -> None:
    pair = login(client, register(client))
    assert_status_body(refresh(client, pair.access_token), 401, UNAUTHENTICATED)
