"""The public REST contract through Envoy: routing, client mistakes, one real call per service."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import httpx
import pytest

from tests.e2e.helpers import Tenant, assert_status_body

pytestmark = pytest.mark.e2e

LATTICE = {"name": "a", "dimensions": 2, "size": 10, "constant": {"value": 1}}
# A loopback receiver (allowed by WEBHOOK_ALLOW_CIDRS in the test stack): registration resolves
# the host, and the tests must not depend on outside DNS.
WEBHOOK = {"url": "http://127.0.0.1:9/hook", "event_types": ["lattice.created"]}


# ------------------------------------------------------------------ the gateway itself
def test_healthz_answers_200(gateway: httpx.Client) -> None:
    reply = gateway.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}


def test_unknown_route_is_404_with_a_status_body(gateway: httpx.Client) -> None:
    assert_status_body(gateway.get("/no/such/route"), 404, grpc.StatusCode.NOT_FOUND.value[0])


def test_malformed_json_body_is_400(gateway: httpx.Client) -> None:
    reply = gateway.post(
        "/v1/auth/register",
        content=b'{"email": "ada@example.com", "password": ',
        headers={"content-type": "application/json"},
    )
    assert_status_body(reply, 400, grpc.StatusCode.INVALID_ARGUMENT.value[0])


def test_unknown_query_parameter_is_400(gateway: httpx.Client, tenant: Tenant) -> None:
    reply = gateway.get("/v1/lattices", params={"no_such_parameter": "1"}, headers=tenant.headers)
    assert_status_body(reply, 400, grpc.StatusCode.INVALID_ARGUMENT.value[0])


def test_wrong_method_on_a_known_path_is_a_json_4xx(gateway: httpx.Client) -> None:
    reply = gateway.put("/v1/auth/register", json={})
    assert reply.status_code in (404, 405), reply.text
    assert isinstance(reply.json()["code"], int)


def test_body_over_the_limit_is_413(gateway: httpx.Client) -> None:
    reply = gateway.post(
        "/v1/auth/register",
        content=b"x" * (9 * 1024 * 1024),
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 413
    assert isinstance(reply.json()["code"], int)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/lattices/not-a-uuid", None),
        ("GET", "/v1/lattices/x/path?start=banana", None),
        ("GET", "/v1/lattices/x/path?algorithm=NO_SUCH_ALGORITHM", None),
        ("POST", "/v1/lattices", b"[1, 2, 3]"),
        ("POST", "/v1/lattices", b'{"dimensions": "many"}'),
        ("POST", "/v1/webhooks", b"\xff\xfe not utf-8"),
        ("DELETE", "/v1/webhooks", None),
        ("PATCH", "/v1/users/me", None),
        ("GET", "/catalytic.auth.v1.AuthService/GetJwks", None),
        ("GET", "/v1/auth/../../etc/passwd", None),
    ],
)
def test_client_mistakes_are_never_5xx(
    gateway: httpx.Client, tenant: Tenant, method: str, path: str, body: bytes | None
) -> None:
    headers = {**tenant.headers, "content-type": "application/json"}
    reply = gateway.request(method, path, content=body, headers=headers)
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text)
    assert isinstance(reply.json()["code"], int)


# ------------------------------------------------------------------ one real RPC per service
def test_register_then_login_returns_a_bearer_token(gateway: httpx.Client, tenant: Tenant) -> None:
    reply = gateway.post(
        "/v1/auth/login", json={"email": tenant.email, "password": tenant.password}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["access_token"]
    assert body["token_type"] == "Bearer"
    assert int(body["expires_in"]) > 0


def test_validation_errors_carry_field_violations(gateway: httpx.Client) -> None:
    reply = gateway.post(
        "/v1/auth/register",
        json={"email": "not-an-email", "password": "long enough passphrase", "tenant_name": "x"},
    )
    assert_status_body(reply, 400, grpc.StatusCode.INVALID_ARGUMENT.value[0])
    types = [detail.get("@type", "") for detail in reply.json().get("details", [])]
    assert any(t.endswith("google.rpc.BadRequest") for t in types), reply.json()


def test_create_lattice_with_a_token(gateway: httpx.Client, tenant: Tenant) -> None:
    reply = gateway.post("/v1/lattices", json=LATTICE, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["vertex_count"] == "100"  # int64: a JSON string
    assert body["id"]


def test_create_webhook_with_a_token(gateway: httpx.Client, tenant: Tenant) -> None:
    reply = gateway.post("/v1/webhooks", json=WEBHOOK, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["secret"].startswith("whsec_")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/users/me", None),
        ("POST", "/v1/lattices", LATTICE),
        ("POST", "/v1/webhooks", WEBHOOK),
    ],
)
def test_calls_without_a_token_are_401(
    gateway: httpx.Client, method: str, path: str, body: dict[str, object] | None
) -> None:
    reply = gateway.request(method, path, json=body)
    assert_status_body(reply, 401, grpc.StatusCode.UNAUTHENTICATED.value[0])


# ------------------------------------------------------------------ native gRPC via the gateway
def test_grpc_clients_can_use_the_gateway(
    grpc_channel: Callable[[str], grpc.Channel],
) -> None:
    from catalytic.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

    stub = auth_service_pb2_grpc.AuthServiceStub(grpc_channel("gateway"))
    reply = stub.GetJwks(auth_service_pb2.GetJwksRequest(), timeout=10)
    assert len(reply.keys) >= 1


def test_internal_rpcs_are_not_reachable_through_the_gateway(
    grpc_channel: Callable[[str], grpc.Channel],
) -> None:
    from catalytic.webhook.v1 import webhook_service_pb2, webhook_service_pb2_grpc

    stub = webhook_service_pb2_grpc.WebhookServiceStub(grpc_channel("gateway"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.PublishEvent(webhook_service_pb2.PublishEventRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
