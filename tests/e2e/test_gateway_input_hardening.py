"""Input the gateway refuses itself before transcoding.

- Path variables and query parameters whose percent-escapes are not UTF-8: 400 naming them
  (before, the transcoder built a request the service could not parse: 500 with internals).
- REST bodies that are not JSON (`text/plain`, no content type, gRPC on a REST path): 415
  (before: accepted as JSON, or HTTP 200 with grpc-status 14).
- JSON values of the wrong type (`"dimensions": "2"`, `"ordered": "yes"`): 400 naming the
  field (before: coerced and accepted), and every 400 of the transcoder's own JSON decoding in
  the services' shape (before: `": Proto field is not repeating...\n"`, no details).
- Slow clients: a request not received in time is 408 (before: held for 300 s); tested on a
  gateway of this module's own with a 2 s limit, which also has no documentation assets: its
  /docs 503 is a flat JSON Status (before: a Status nested in the message string).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import Stack
from devstack.envoy import Envoy
from gateway import schema
from gateway.render import DEFAULT_OPENAPI, TRANSCODED_SERVICES
from tests.e2e.helpers import Tenant, assert_bad_request, assert_status_body

pytestmark = pytest.mark.e2e

NOT_UTF8 = "%ff%fe"
SOME_ID = "00000000-0000-4000-8000-000000000000"
LATTICE = {"name": "hardening", "dimensions": 2, "size": 4, "constant": {"value": 1}}


def _bindings_with_variables() -> list[tuple[str, str, str]]:
    """(method, path with NOT_UTF8 in one variable, that variable) for every REST binding."""
    built = schema.build(
        schema.load(Path(schema.__file__).resolve().parent.parent / "gen/descriptors/catalytic.pb"),
        TRANSCODED_SERVICES,
    )
    cases = []
    for route in built.paths:
        for variable in route.variables:
            path = route.template
            for other in route.variables:
                path = path.replace("{" + other + "}", NOT_UTF8 if other == variable else SOME_ID)
            cases.append((route.method, path, variable))
    return cases


def _operations_with(parameter: str) -> list[tuple[str, str]]:
    """(method, path template) of every operation in the OpenAPI document with that query
    parameter."""
    document = json.loads(DEFAULT_OPENAPI.read_text())
    return [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if any(
            p["in"] == "query" and p["name"] == parameter for p in operation.get("parameters", [])
        )
    ]


# ------------------------------------------------------------------ item 2: UTF-8 in the URL
VARIABLE_CASES = _bindings_with_variables()


def test_every_path_variable_is_covered() -> None:
    assert len(VARIABLE_CASES) >= 18  # the {id} routes, {delivery_id} and {user_id}
    assert {variable for _, _, variable in VARIABLE_CASES} == {"id", "delivery_id", "user_id"}


@pytest.mark.parametrize(("method", "path", "variable"), VARIABLE_CASES, ids=str)
def test_a_path_variable_that_is_not_utf8_is_400_naming_it(
    gateway: httpx.Client, tenant: Tenant, method: str, path: str, variable: str
) -> None:
    reply = gateway.request(method, path, headers=tenant.headers)
    assert_bad_request(reply, variable)
    assert "DecodeError" not in reply.text


@pytest.mark.parametrize(("method", "template"), _operations_with("page_token"), ids=str)
def test_a_page_token_that_is_not_utf8_is_400_naming_it(
    gateway: httpx.Client, tenant: Tenant, method: str, template: str
) -> None:
    path = template.replace("{id}", SOME_ID)
    reply = gateway.request(method, f"{path}?page_token=%c3%28", headers=tenant.headers)
    assert_bad_request(reply, "page_token")


def test_valid_utf8_escapes_still_reach_the_service(gateway: httpx.Client, tenant: Tenant) -> None:
    reply = gateway.get("/v1/lattices/%C3%A9t%C3%A9", headers=tenant.headers)
    assert_bad_request(reply, "id")  # the service's answer: not a UUID
    assert "UTF-8" not in reply.json()["message"]


# ------------------------------------------------------------------ item 6: media types
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        None,
        "application/x-www-form-urlencoded",
        "application/merge-patch+json",
        "application/json; charset=latin1",
    ],
)
def test_a_body_that_is_not_json_is_415(
    gateway: httpx.Client, tenant: Tenant, content_type: str | None
) -> None:
    headers = {**tenant.headers}
    if content_type is not None:
        headers["content-type"] = content_type
    reply = gateway.post("/v1/lattices", content=json.dumps(LATTICE), headers=headers)
    assert_status_body(reply, 415, 3)
    assert "application/json" in reply.json()["message"]
    assert gateway.get("/v1/lattices", headers=tenant.headers).json()["lattices"] == []


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_with_a_charset_or_in_capitals_is_json(
    gateway: httpx.Client, tenant: Tenant, content_type: str
) -> None:
    headers = {**tenant.headers, "content-type": content_type}
    reply = gateway.post("/v1/lattices", content=json.dumps(LATTICE), headers=headers)
    assert reply.status_code == 200, reply.text


def test_a_post_without_a_body_needs_no_content_type(gateway: httpx.Client) -> None:
    reply = gateway.post(f"/v1/webhooks/{SOME_ID}/rotate-secret")
    assert_status_body(reply, 401, 16)  # reached the service: no credential


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/lattices"), ("GET", "/v1/lattices"), ("POST", "/v1/x")]
)
def test_grpc_on_a_rest_path_is_415_not_200(
    gateway: httpx.Client, tenant: Tenant, method: str, path: str
) -> None:
    headers = {**tenant.headers, "content-type": "application/grpc", "te": "trailers"}
    reply = gateway.request(method, path, content=b"\0\0\0\0\0", headers=headers)
    assert_status_body(reply, 415, 3)
    assert "grpc-status" not in reply.headers


# ------------------------------------------------------------------ item 6: JSON types
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/lattices", {**LATTICE, "dimensions": "2"}, "dimensions"),
        ("/v1/lattices", {**LATTICE, "size": 4.5}, "size"),
        ("/v1/lattices", {**LATTICE, "size": True}, "size"),
        ("/v1/lattices", {**LATTICE, "constant": {"value": "0x10"}}, "constant.value"),
        ("/v1/lattices", {**LATTICE, "constant": {"value": "1.5"}}, "constant.value"),
        ("/v1/lattices", {**LATTICE, "constant": {"value": 1e39}}, "constant.value"),
        ("/v1/lattices", {**LATTICE, "constant": 5}, "constant"),
        ("/v1/lattices", {**LATTICE, "name": 7}, "name"),
        ("/v1/lattices", {**LATTICE, "name": ["a"]}, "name"),
        (
            "/v1/lattices",
            {**LATTICE, "constant": None, "random": {"seed": "12ab", "low": 0, "high": 1}},
            "random.seed",
        ),
        (
            "/v1/lattices",
            {**LATTICE, "constant": None, "random": {"seed": 2**64, "low": 0, "high": 1}},
            "random.seed",
        ),
        ("/v1/webhooks", {"url": "https://example.com/h", "ordered": "yes"}, "ordered"),
        ("/v1/webhooks", {"url": "https://example.com/h", "event_types": "x"}, "event_types"),
        ("/v1/webhooks", {"url": "https://example.com/h", "event_types": [1]}, "event_types[0]"),
        ("/v1/auth/login", {"email": 123, "password": [1]}, "email"),
        ("/v1/auth/login", {"email": "a@example.com", "password": [1]}, "password"),
        ("/v1/auth/login", {"email": {"a": 1}, "password": "x"}, "email"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else str(value),
)
def test_a_value_of_the_wrong_json_type_is_400_naming_the_field(
    gateway: httpx.Client, tenant: Tenant, path: str, body: dict[str, Any], field: str
) -> None:
    sent = {key: value for key, value in body.items() if value is not None}
    reply = gateway.post(path, json=sent, headers=tenant.headers)
    assert_bad_request(reply, field)


@pytest.mark.parametrize(
    "body",
    [
        {**LATTICE, "constant": None, "random": {"seed": "42", "low": 0, "high": 1}},
        {**LATTICE, "constant": None, "random": {"seed": 42, "low": 0, "high": "Infinity"}},
        {**LATTICE, "constant": {"value": "NaN"}},
        {**LATTICE, "constant": {"value": "-Infinity"}},
        {**LATTICE, "dimensions": 2.0},
        {**LATTICE, "dimensions": None},
    ],
    ids=json.dumps,
)
def test_proto3_json_forms_are_still_accepted(
    gateway: httpx.Client, tenant: Tenant, body: dict[str, Any]
) -> None:
    """64-bit integers as strings or numbers, non-finite floats as their proto3 JSON strings,
    whole numbers with a fraction part, null for a default: what the transcoder accepts and the
    canonical form documents. Answers other than 200 come from the service, naming a field."""
    sent = {key: value for key, value in body.items() if value is not None or key != "constant"}
    reply = gateway.post("/v1/lattices", json=sent, headers=tenant.headers)
    if reply.status_code != 200:
        assert_bad_request(reply, reply.json()["details"][0]["field_violations"][0]["field"])
        assert reply.json()["message"].split(":")[0] in {"dimensions", "random.high"}, reply.text


# ------------------------------------------------------------------ item 9: one 400 shape
@pytest.mark.parametrize(
    ("method", "path", "content", "field"),
    [
        ("POST", "/v1/lattices", '{"name": "a",', "body"),
        ("POST", "/v1/lattices", "[1]", "body"),
        ("POST", "/v1/lattices", '{"name": "a"} x', "body"),
        ("GET", "/v1/lattices?page_size=abc", None, "page_size"),
        ("GET", "/v1/lattices?bogus=1", None, "bogus"),
        ("GET", f"/v1/lattices/{SOME_ID}/path?algorithm=FASTEST", None, "algorithm"),
        ("POST", f"/v1/lattices/{SOME_ID}/transform", '{"id": "x", "normalize": {}}', "id"),
    ],
)
def test_every_400_of_the_gateway_has_the_services_shape(
    gateway: httpx.Client,
    tenant: Tenant,
    method: str,
    path: str,
    content: str | None,
    field: str,
) -> None:
    headers = {**tenant.headers, "content-type": "application/json"}
    reply = gateway.request(method, path, content=content, headers=headers)
    assert_bad_request(reply, field)
    assert "TYPE_" not in reply.text
    assert "type.googleapis.com/catalytic" not in reply.text


def test_header_name_400_is_a_flat_status(gateway: httpx.Client) -> None:
    reply = gateway.get("/v1/users/me", headers={"a+b": "1"})
    assert_bad_request(reply, "headers")


# ------------------------------------------------------------------ items 8 and 9b: own gateway
SLOW_CLIENT_S = 2


@dataclasses.dataclass(frozen=True)
class Edge:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Iterator[Edge]:
    """The stack's gateway config with a 2 s request timeout and no documentation assets."""
    run_dir = Path(tempfile.mkdtemp(prefix="catalytic-test-input-"))
    (run_dir / "no-assets").mkdir()
    port = _free_port()
    config = dataclasses.replace(
        stack.envoy.config,
        gateway_port=port,
        admin_port=_free_port(),
        request_timeout_s=SLOW_CLIENT_S,
        request_headers_timeout_s=1,
        web_assets=run_dir / "no-assets",
        access_log=str(run_dir / "access.log"),
    )
    envoy = Envoy(run_dir, config, base_id=port)
    try:
        envoy.start()
        yield Edge(config.gateway_bind, port)
    finally:
        envoy.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _read_reply(sock: socket.socket, deadline_s: float) -> tuple[float, bytes]:
    """Seconds until the gateway answered (or closed), and what it sent."""
    started = time.monotonic()
    sock.settimeout(deadline_s)
    received = b""
    while b"\r\n\r\n" not in received or not received.endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return time.monotonic() - started, received


def test_a_body_that_never_completes_is_408_within_the_request_timeout(edge: Edge) -> None:
    with socket.create_connection((edge.host, edge.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/auth/login HTTP/1.1\r\nhost: gateway\r\n"
            b"content-type: application/json\r\ncontent-length: 100\r\n\r\n"
            b'{"email": '
        )
        elapsed, received = _read_reply(sock, 10 * SLOW_CLIENT_S)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received
    assert SLOW_CLIENT_S - 0.5 <= elapsed < 4 * SLOW_CLIENT_S, elapsed
    assert json.loads(body)["code"] == 4


def test_headers_that_never_complete_are_cut_too(edge: Edge) -> None:
    with socket.create_connection((edge.host, edge.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/users/me HTTP/1.1\r\nhost: gateway\r\n")
        elapsed, received = _read_reply(sock, 10 * SLOW_CLIENT_S)
    assert elapsed < 4 * SLOW_CLIENT_S, (elapsed, received)
    assert received == b"" or received.startswith(b"HTTP/1.1 408"), received


def test_a_request_received_in_time_is_not_cut(edge: Edge) -> None:
    """The timer stops once the whole request is in: an answer that takes longer still comes."""
    with httpx.Client(base_url=edge.url, timeout=30, trust_env=False) as client:
        reply = client.post(
            "/v1/auth/login", json={"email": "nobody@example.com", "password": "x" * 12}
        )
    assert reply.status_code == 401, reply.text


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/swagger-ui-bundle.js"])
def test_missing_documentation_assets_are_a_flat_503(edge: Edge, path: str) -> None:
    reply = httpx.get(f"{edge.url}{path}", timeout=10, trust_env=False)
    assert_status_body(reply, 503, 14)
    message = reply.json()["message"]
    assert not message.lstrip().startswith("{"), message
    assert "npm install" in message
