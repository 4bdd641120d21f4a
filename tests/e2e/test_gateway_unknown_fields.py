"""Unknown JSON body keys and oversized headers are client mistakes the gateway answers itself.

The transcoder would drop unknown body keys silently (envoy#46623); the `request_checks` Lua
filter refuses them with 400 INVALID_ARGUMENT naming the key. Request headers over the gateway's
limit get 431 from Envoy instead of a RESOURCE_EXHAUSTED (429) from a service's gRPC metadata
limit. See gateway/README.md.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest

from tests.e2e.helpers import Tenant, assert_status_body

pytestmark = pytest.mark.e2e

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
LATTICE = {"name": "a", "dimensions": 2, "size": 10, "constant": {"value": 1}}
# 1,000,000 float32 values: a 5.3 MB body, over the free plan (the stack's DEFAULT_PLAN).
BIG_VALUES = base64.b64encode(bytes(4 * 100**3)).decode()
BIG_LATTICE = {"name": "big", "dimensions": 3, "size": 100, "values": BIG_VALUES}


def post_json(
    gateway: httpx.Client, path: str, text: str | bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POSTs the body exactly as given (no re-encoding), as JSON."""
    content = text.encode() if isinstance(text, str) else text
    return gateway.post(
        path, content=content, headers={**(headers or {}), "content-type": "application/json"}
    )


def assert_unknown_field(reply: httpx.Response, field: str) -> None:
    """The reply is the request_checks filter's 400, naming `field`."""
    assert_status_body(reply, 400, INVALID_ARGUMENT)
    assert reply.json() == {
        "code": INVALID_ARGUMENT,
        "message": f'unknown field "{field}"',
        "details": [
            {
                "@type": BAD_REQUEST,
                "field_violations": [{"field": field, "description": "unknown field"}],
            }
        ],
    }


def is_unknown_field_reply(reply: httpx.Response) -> bool:
    try:
        body: Any = reply.json()
    except ValueError:
        return False
    return isinstance(body, dict) and str(body.get("message", "")).startswith("unknown field")


# ------------------------------------------------------------------ refused
def test_an_unknown_top_level_key_is_400_naming_it(gateway: httpx.Client, tenant: Tenant) -> None:
    body = {"name": "a", "dimension": 3, "size": 10, "constant": {"value": 1}}  # dimensionS
    reply = gateway.post("/v1/lattices", json=body, headers=tenant.headers)
    assert_unknown_field(reply, "dimension")


def test_an_unknown_nested_key_is_400_naming_its_path(
    gateway: httpx.Client, tenant: Tenant
) -> None:
    body = {"name": "a", "dimensions": 2, "size": 10, "random": {"sede": 7, "high": 1}}
    reply = gateway.post("/v1/lattices", json=body, headers=tenant.headers)
    assert_unknown_field(reply, "random.sede")


def test_the_first_unknown_key_is_named(gateway: httpx.Client) -> None:
    reply = post_json(gateway, "/v1/auth/login", '{"emial": "a@example.com", "pasword": "x"}')
    assert_unknown_field(reply, "emial")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/lattices/create", {"name": "a", "sise": 10}, "sise"),  # additional binding
        ("/v1/lattices/{id}/transform", {"xor": {"kye": 1}}, "xor.kye"),  # path template
        ("/v1/lattices/{id}/transform", {"normalize": {"mean": 0}}, "normalize.mean"),
        ("/v1/lattices/{id}/transform", {"op": {"xor": {"key": 1}}}, "op"),  # oneof name
        ("/v1/webhooks", {"url": "http://127.0.0.1:9/h", "events": ["*"]}, "events"),
        ("/v1/api-keys", {"name": "k", "scopes": ["read"]}, "scopes"),
        ("/v1/auth/refresh", {"refresh_token": "x", "access_token": "y"}, "access_token"),
        ("/v1/auth/logout", {"refreshtoken": "x"}, "refreshtoken"),  # neither name: case counts
        ("/v1/auth/register", {"email": "a@example.com", "tenant": "t"}, "tenant"),
    ],
)
def test_every_rest_body_is_checked(
    gateway: httpx.Client, tenant: Tenant, path: str, body: dict[str, Any], field: str
) -> None:
    reply = gateway.post(path.replace("{id}", str(uuid.uuid4())), json=body, headers=tenant.headers)
    assert_unknown_field(reply, field)


def test_keys_are_compared_after_decoding_escapes(gateway: httpx.Client) -> None:
    # "na\u006de" is "name" (accepted); "dimensio\u006e" is "dimension" (not a field).
    reply = post_json(gateway, "/v1/lattices", r'{"na\u006de": "a", "dimensio\u006e": 3}')
    assert_unknown_field(reply, "dimension")


def test_names_are_escaped_in_the_reply(gateway: httpx.Client) -> None:
    reply = post_json(gateway, "/v1/lattices", r'{"say \"hi\"\n\ud834\udd1e": 1}')
    assert_unknown_field(reply, 'say "hi"\n\U0001d11e')


def test_long_names_are_shortened_in_the_reply(gateway: httpx.Client) -> None:
    reply = post_json(gateway, "/v1/lattices", json.dumps({"x" * 5000: 1}))
    assert_status_body(reply, 400, INVALID_ARGUMENT)
    field = reply.json()["details"][0]["field_violations"][0]["field"]
    assert field == "x" * 256 + "..."


def test_the_query_string_does_not_hide_the_route(gateway: httpx.Client) -> None:
    reply = post_json(gateway, "/v1/lattices?name=a", '{"dimension": 3}')
    assert_unknown_field(reply, "dimension")


# ------------------------------------------------------------------ accepted
def test_a_valid_request_still_works(gateway: httpx.Client, tenant: Tenant) -> None:
    reply = gateway.post("/v1/lattices", json=LATTICE, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["vertex_count"] == "100"


def test_json_names_are_accepted(gateway: httpx.Client) -> None:
    unique = uuid.uuid4().hex[:12]
    reply = gateway.post(
        "/v1/auth/register",
        json={
            "email": f"camel-{unique}@example.com",
            "password": f"camel passphrase {unique}",
            "tenantName": f"camel-{unique}",  # the JSON name of tenant_name
        },
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["tenant"]["name"] == f"camel-{unique}"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/lattices/{id}/transform", {"rotate": {"axisA": 0, "axis_b": 1, "quarterTurns": 1}}),
        ("/v1/lattices/{id}/transform", {"xor": {"key": 1}, "ifVersion": "1"}),
        ("/v1/lattices/{id}/transform", {"normalize": {}, "if_version": "1", "id": "{id}"}),
        ("/v1/lattices", {"random": {"seed": "7", "blockedFraction": 0.1, "blocked_fraction": 0}}),
        ("/v1/lattices", {"constant": None, "values": None, "name": None}),
        ("/v1/webhooks", {"url": "http://127.0.0.1:9/h", "eventTypes": ["*"], "description": ""}),
    ],
)
def test_nested_json_names_and_oneof_members_pass(
    gateway: httpx.Client, tenant: Tenant, path: str, body: dict[str, Any]
) -> None:
    # Whatever the service then says (these may be refused for other reasons, or not be
    # implemented yet), it is the service that says it.
    lattice = str(uuid.uuid4())
    text = json.dumps(body).replace("{id}", lattice)
    reply = post_json(gateway, path.replace("{id}", lattice), text, tenant.headers)
    assert not is_unknown_field_reply(reply), reply.text


def test_pretty_printed_bodies_with_escapes_are_accepted(
    gateway: httpx.Client, tenant: Tenant
) -> None:
    text = json.dumps({**LATTICE, "name": 'tab\t"quoted" \\ \u00e9 \U0001d11e'}, indent=2)
    reply = post_json(gateway, "/v1/lattices", text, tenant.headers)
    assert reply.status_code == 200, reply.text


def test_a_body_for_a_non_body_route_is_not_checked(gateway: httpx.Client, tenant: Tenant) -> None:
    # rotate-secret takes no body: what the client sends is not ours to judge.
    reply = post_json(
        gateway, f"/v1/webhooks/{uuid.uuid4()}/rotate-secret", '{"x": 1}', tenant.headers
    )
    assert not is_unknown_field_reply(reply), reply.text


# ------------------------------------------------------------------ left to the transcoder
def test_malformed_json_is_still_the_transcoders_400(gateway: httpx.Client) -> None:
    reply = post_json(gateway, "/v1/lattices", '{"name": "a", "dimensions": ')
    assert_status_body(reply, 400, INVALID_ARGUMENT)
    assert not is_unknown_field_reply(reply), reply.text


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "a"',  # cut short
        '{"name": "a"} trailing',
        '{"name": "\\ud800"}',  # lone surrogate
        "[1, 2, 3]",
        '"a string"',
        '{"dimensions": "many"}',  # a known key, a wrong type
    ],
)
def test_other_client_mistakes_are_still_400(gateway: httpx.Client, text: str) -> None:
    reply = post_json(gateway, "/v1/lattices", text)
    assert_status_body(reply, 400, INVALID_ARGUMENT)
    assert not is_unknown_field_reply(reply), reply.text


def test_native_grpc_is_not_inspected(
    grpc_channel: Callable[[str], grpc.Channel], tenant: Tenant
) -> None:
    from catalytic.lattice.v1 import lattice_service_pb2, lattice_service_pb2_grpc

    stub = lattice_service_pb2_grpc.LatticeServiceStub(grpc_channel("gateway"))
    request = lattice_service_pb2.CreateLatticeRequest(
        name="g", dimensions=2, size=10, constant=lattice_service_pb2.ConstantFill(value=1)
    )
    reply = stub.CreateLattice(
        request, metadata=(("authorization", f"Bearer {tenant.access_token}"),), timeout=10
    )
    assert reply.vertex_count == 100


# ------------------------------------------------------------------ big bodies
def test_a_big_body_with_an_unknown_key_is_refused_quickly(
    gateway: httpx.Client, tenant: Tenant
) -> None:
    text = json.dumps({**BIG_LATTICE, "dimension": 3})  # after 5.3 MB of base64
    started = time.perf_counter()
    reply = post_json(gateway, "/v1/lattices", text, tenant.headers)
    elapsed = time.perf_counter() - started
    assert_unknown_field(reply, "dimension")
    assert elapsed < 2.0, f"{elapsed:.2f} s"  # about 10 ms here, upload included


def test_a_big_body_without_unknown_keys_reaches_the_service(
    gateway: httpx.Client, tenant: Tenant
) -> None:
    reply = post_json(gateway, "/v1/lattices", json.dumps(BIG_LATTICE), tenant.headers)
    # The free plan's limit answers (429); what matters is that the service did.
    assert not is_unknown_field_reply(reply), reply.text[:200]
    assert reply.status_code == 429, reply.text[:200]
    assert reply.json()["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


def test_a_body_over_the_limit_is_413_even_with_an_unknown_key(gateway: httpx.Client) -> None:
    text = '{"dimension": 3, "name": "' + "x" * (9 * 1024 * 1024) + '"}'
    reply = post_json(gateway, "/v1/lattices", text)
    assert reply.status_code == 413
    assert reply.json()["code"] == INVALID_ARGUMENT


def test_bodies_of_many_values_are_not_slow(gateway: httpx.Client, tenant: Tenant) -> None:
    # Millions of tiny values: the filter gives up after a bounded amount of work and lets the
    # transcoder and the service answer (here: too many event types).
    text = '{"url": "http://127.0.0.1:9/h", "event_types": [' + ",".join(["1"] * 2_000_000)
    text += '], "descriptoin": "x"}'
    started = time.perf_counter()
    reply = post_json(gateway, "/v1/webhooks", text, tenant.headers)
    elapsed = time.perf_counter() - started
    assert_status_body(reply, 400, INVALID_ARGUMENT)
    assert elapsed < 2.0, f"{elapsed:.2f} s"


# ------------------------------------------------------------------ header size
@pytest.mark.parametrize("size", [9 * 1024, 64 * 1024])
def test_oversized_headers_are_431(gateway: httpx.Client, size: int) -> None:
    reply = gateway.get("/v1/users/me", headers={"authorization": "Bearer " + "a" * size})
    assert_status_body(reply, 431, INVALID_ARGUMENT)


def test_headers_under_the_limit_reach_the_service(gateway: httpx.Client) -> None:
    # 6 KiB of token: under Envoy's 8 KiB, and (with what Envoy adds) under the services' 8 KiB
    # gRPC metadata limit, so the service answers: a malformed token is 401, never 429.
    for _ in range(5):
        reply = gateway.get("/v1/users/me", headers={"authorization": "Bearer " + "a" * 6144})
        assert_status_body(reply, 401, grpc.StatusCode.UNAUTHENTICATED.value[0])
