"""gateway/openapi.py: the OpenAPI document follows the protos as the transcoder reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from gateway import apidocs, openapi
from gateway.render import DEFAULT_DESCRIPTOR, REPO_ROOT

COMMITTED = REPO_ROOT / "docs" / "api" / "openapi.json"
# The public contract (ARCHITECTURE.md §3), route by route.
CONTRACT_ROUTES = {
    ("post", "/v1/auth/register"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("get", "/v1/users/me"),
    ("get", "/.well-known/jwks.json"),
    ("post", "/v1/api-keys"),
    ("get", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{id}"),
    # Teams (ADR 63).
    ("post", "/v1/auth/switch-tenant"),
    ("get", "/v1/users/me/tenants"),
    ("post", "/v1/invitations"),
    ("get", "/v1/invitations"),
    ("delete", "/v1/invitations/{id}"),
    ("post", "/v1/invitations/accept"),
    ("get", "/v1/members"),
    ("patch", "/v1/members/{user_id}"),
    ("delete", "/v1/members/{user_id}"),
    # The audit trail (ADR 65).
    ("get", "/v1/audit-events"),
    ("post", "/v1/lattices"),
    ("post", "/v1/lattices/create"),
    ("get", "/v1/lattices/{id}"),
    ("get", "/v1/lattices"),
    ("delete", "/v1/lattices/{id}"),
    ("get", "/v1/lattices/{id}/field"),
    ("post", "/v1/lattices/{id}/transform"),
    ("get", "/v1/lattices/{id}/path"),
    ("get", "/v1/lattices/{id}/analysis"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks/{id}"),
    ("get", "/v1/webhooks"),
    ("delete", "/v1/webhooks/{id}"),
    ("post", "/v1/webhooks/{id}/rotate-secret"),
    ("post", "/v1/webhooks/{id}/enable"),
    ("post", "/v1/webhooks/{id}/test"),
    ("get", "/v1/webhooks/{id}/deliveries"),
    ("post", "/v1/webhooks/{id}/deliveries/{delivery_id}/resend"),
}


@pytest.fixture(scope="module")
def text() -> str:
    return openapi.generate(DEFAULT_DESCRIPTOR)


@pytest.fixture(scope="module")
def doc(text: str) -> dict[str, Any]:
    return json.loads(text)


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(verb, path): op for path, item in doc["paths"].items() for verb, op in item.items()}


def schema_of(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["components"]["schemas"][name]  # type: ignore[no-any-return]


def test_committed_copy_is_current(text: str) -> None:
    assert COMMITTED.read_text() == text, "docs/api/openapi.json is stale: run `make openapi`"


def test_committed_guides_are_current(doc: dict[str, Any]) -> None:
    """The generated blocks of docs/api/*.md come from the same document (gateway/apidocs.py)."""
    stale = [
        path.name
        for path, fresh in apidocs.updated(apidocs.DOCS_DIR, doc).items()
        if path.read_text() != fresh
    ]
    assert not stale, f"docs/api/{', '.join(stale)} stale: run `make openapi`"


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_contract_route_is_documented(doc: dict[str, Any]) -> None:
    assert set(operations(doc)) == CONTRACT_ROUTES


def test_public_routes_need_no_credential(doc: dict[str, Any]) -> None:
    from services.auth.server import PUBLIC_METHODS

    rpcs = {f"{m.strip('/').replace('/', '.')}" for m in PUBLIC_METHODS}
    assert rpcs == openapi.PUBLIC_RPCS
    public = {key for key, op in operations(doc).items() if op.get("security") == []}
    assert public == {
        ("post", "/v1/auth/register"),
        ("post", "/v1/auth/login"),
        ("post", "/v1/auth/refresh"),
        ("get", "/.well-known/jwks.json"),
    }
    optional = {key for key, op in operations(doc).items() if {} in op.get("security", [])}
    assert optional == {("post", "/v1/invitations/accept")}


def test_every_operation_names_the_role_the_services_require(doc: dict[str, Any]) -> None:
    from services.common.permissions import RULES

    for (verb, path), op in operations(doc).items():
        service, _, name = apidocs._prose(op)[1].rpartition(".")
        method = f"/{service}/{name}"
        assert method in RULES, f"{verb.upper()} {path}: {method} has no permission rule"
        assert op["x-required-role"] == RULES[method].describe(), (verb, path)


def test_proto3_json_mapping(doc: dict[str, Any]) -> None:
    lattice = schema_of(doc, "catalytic.lattice.v1.Lattice")["properties"]
    assert lattice["vertex_count"]["type"] == "string"  # int64
    assert lattice["vertex_count"]["format"] == "int64"
    assert lattice["created_at"]["format"] == "date-time"  # Timestamp
    assert lattice["dimensions"]["type"] == "integer"  # int32
    create = schema_of(doc, "catalytic.lattice.v1.CreateLatticeRequest")
    assert create["properties"]["values"]["format"] == "byte"  # bytes: base64
    assert create["properties"]["name"]["description"]  # proto comments
    algorithm = schema_of(doc, "catalytic.lattice.v1.FindPathRequest.Algorithm")
    assert algorithm["type"] == "string"
    assert {"AUTO", "BFS", "DIJKSTRA", "ASTAR", "CATALYTIC"} <= set(algorithm["enum"])


def test_oneof_members_are_optional_and_exclusive(doc: dict[str, Any]) -> None:
    create = schema_of(doc, "catalytic.lattice.v1.CreateLatticeRequest")
    assert {"constant", "random", "values"} <= set(create["properties"])
    assert "required" not in create
    branches = create["oneOf"]
    assert [b.get("required") for b in branches[:3]] == [["constant"], ["random"], ["values"]]
    assert "not" in branches[3]  # or none of them


def test_body_star_leaves_path_fields_out_of_the_body(doc: dict[str, Any]) -> None:
    op = operations(doc)[("post", "/v1/lattices/{id}/transform")]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert "id" not in body["properties"]
    assert "xor" in body["properties"]
    assert [p["name"] for p in op["parameters"]] == ["id"]
    assert "413" in op["responses"]
    assert "409" in op["responses"]  # if_version: ABORTED


def test_remaining_fields_are_query_parameters(doc: dict[str, Any]) -> None:
    op = operations(doc)[("get", "/v1/lattices/{id}/path")]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["id"]["in"] == "path"
    assert params["start"]["in"] == "query"
    assert params["start"]["schema"]["type"] == "array"
    assert params["start"]["explode"] is True
    assert params["algorithm"]["schema"]["$ref"].endswith("FindPathRequest.Algorithm")
    assert "requestBody" not in op
    listing = operations(doc)[("get", "/v1/lattices")]
    assert {p["name"] for p in listing["parameters"]} >= {"page_size", "page_token"}


def test_errors_are_google_rpc_status(doc: dict[str, Any]) -> None:
    status = schema_of(doc, "google.rpc.Status")
    assert set(status["properties"]) == {"code", "message", "details"}
    items = status["properties"]["details"]["items"]["anyOf"]
    assert items[0]["allOf"][0]["$ref"].endswith("google.rpc.BadRequest")
    responses = doc["components"]["responses"]
    assert "retry-after" in responses["Error429"]["headers"]
    for op in operations(doc).values():
        assert {"400", "429", "500", "503"} <= set(op["responses"])
        assert op["tags"]
        assert op["summary"]


def test_the_gateways_own_answers_are_declared(doc: dict[str, Any]) -> None:
    """408 (a slow client) on every operation, 415 (not JSON) where a client sends a body:
    answered by the gateway before any service (docs/api/errors.md)."""
    for key, op in operations(doc).items():
        assert "408" in op["responses"], key
        assert ("415" in op["responses"]) == ("requestBody" in op), key
        assert ("413" in op["responses"]) == ("requestBody" in op), key
    responses = doc["components"]["responses"]
    assert "application/json" in responses["Error415"]["description"]
    assert "DEADLINE_EXCEEDED" in responses["Error408"]["description"]


def test_additional_bindings_get_their_own_operation(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    assert ops[("post", "/v1/lattices")]["operationId"] == "CreateLattice"
    assert ops[("post", "/v1/lattices/create")]["operationId"] == "CreateLattice_2"
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert {tag["name"] for tag in doc["tags"]} == {
        "AuthService",
        "LatticeService",
        "WebhookService",
    }


def test_main_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    assert openapi.main(["--out", str(out)]) == 0
    assert json.loads(out.read_text())["openapi"] == openapi.OPENAPI_VERSION
    assert openapi.main(["--descriptor", str(tmp_path / "missing.pb")]) == 2
