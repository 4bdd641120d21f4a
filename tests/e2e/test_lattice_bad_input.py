"""Malformed lattice requests through Envoy: every one is a 4xx naming the bad field, none 5xx.

A field is named either in the body's google.rpc.BadRequest details (the service's validation)
or at the start of the message (Envoy's transcoder, which refuses values it cannot parse before
the service sees them: "offset: invalid value ...").
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.helpers import Tenant, register_and_login

pytestmark = pytest.mark.e2e

SIZE = 10
BLOCKED = (5, 5)  # the one blocked vertex of the shared lattice


@dataclass(frozen=True)
class Bad:
    """One malformed request; `{id}` is the shared lattice's id."""

    name: str
    method: str
    route: str
    field: str  # the field the answer must name
    params: list[tuple[str, Any]] = field(default_factory=list)
    body: dict[str, Any] | None = None

    def __str__(self) -> str:
        return self.name


def lattice(**overrides: Any) -> dict[str, Any]:
    return {"name": "bad", "dimensions": 2, "size": 4, "constant": {"value": 1}, **overrides}


def pt(start: list[Any], end: list[Any], *extra: tuple[str, Any]) -> list[tuple[str, Any]]:
    return [("start", c) for c in start] + [("end", c) for c in end] + list(extra)


CASES = [
    # --- CreateLattice
    Bad("create: empty name", "POST", "/v1/lattices", "name", body=lattice(name="  ")),
    Bad("create: long name", "POST", "/v1/lattices", "name", body=lattice(name="n" * 101)),
    # PostgreSQL cannot store U+0000 (JSON "\u0000"); it was a 500.
    Bad("create: NUL in name", "POST", "/v1/lattices", "name", body=lattice(name="a\x00b")),
    Bad("create: 0 dimensions", "POST", "/v1/lattices", "dimensions", body=lattice(dimensions=0)),
    Bad("create: 11 dimensions", "POST", "/v1/lattices", "dimensions", body=lattice(dimensions=11)),
    Bad("create: size 1", "POST", "/v1/lattices", "size", body=lattice(size=1)),
    Bad("create: size 101", "POST", "/v1/lattices", "size", body=lattice(size=101)),
    Bad(
        "create: impossible shape",
        "POST",
        "/v1/lattices/create",
        "size",
        body=lattice(dimensions=10, size=100),
    ),
    Bad(
        "create: dimensions not a number",
        "POST",
        "/v1/lattices",
        "dimensions",
        body=lattice(dimensions="three"),
    ),
    Bad(
        "create: no fill",
        "POST",
        "/v1/lattices",
        "fill",
        body={"name": "a", "dimensions": 2, "size": 4},
    ),
    Bad(
        "create: two fills",
        "POST",
        "/v1/lattices",
        "fill",
        body=lattice(random={"seed": 1, "low": 0, "high": 1}),
    ),
    Bad(
        "create: constant beyond float32",
        "POST",
        "/v1/lattices",
        "constant.value",
        body=lattice(constant={"value": 1e39}),
    ),
    Bad(
        "create: random low negative",
        "POST",
        "/v1/lattices",
        "random.low",
        body=lattice(constant=None, random={"seed": 1, "low": -1, "high": 1}),
    ),
    Bad(
        "create: random high not above low",
        "POST",
        "/v1/lattices",
        "random.high",
        body=lattice(constant=None, random={"seed": 1, "low": 2, "high": 2}),
    ),
    Bad(
        "create: random blocked_fraction 1",
        "POST",
        "/v1/lattices",
        "random.blocked_fraction",
        body=lattice(constant=None, random={"seed": 1, "low": 0, "high": 1, "blocked_fraction": 1}),
    ),
    Bad(
        "create: random seed negative",
        "POST",
        "/v1/lattices",
        "random.seed",
        body=lattice(constant=None, random={"seed": -1, "low": 0, "high": 1}),
    ),
    Bad(
        "create: values of the wrong length",
        "POST",
        "/v1/lattices",
        "values",
        body=lattice(constant=None, values=base64.b64encode(b"\0" * 60).decode()),
    ),
    Bad(
        "create: values not base64",
        "POST",
        "/v1/lattices",
        "values",
        body=lattice(constant=None, values="not base64!"),
    ),
    Bad(
        "create: dimensions as a string",
        "POST",
        "/v1/lattices",
        "dimensions",
        body=lattice(dimensions="2"),
    ),
    Bad(
        "create: constant value as a hex string",
        "POST",
        "/v1/lattices",
        "constant.value",
        body=lattice(constant={"value": "0x10"}),
    ),
    Bad(
        "create: random seed not digits",
        "POST",
        "/v1/lattices",
        "random.seed",
        body=lattice(constant=None, random={"seed": "7x", "low": 0, "high": 1}),
    ),
    # --- GetLattice, DeleteLattice, ListLattices
    Bad("get: malformed id", "GET", "/v1/lattices/not-a-uuid", "id"),
    Bad("get: id not UTF-8", "GET", "/v1/lattices/%ff%fe", "id"),
    Bad("delete: id not UTF-8", "DELETE", "/v1/lattices/%c3%28", "id"),
    Bad("list: page_token not UTF-8", "GET", "/v1/lattices?page_token=%ff", "page_token"),
    Bad("delete: malformed id", "DELETE", "/v1/lattices/12345", "id"),
    Bad("list: page_size 101", "GET", "/v1/lattices", "page_size", params=[("page_size", 101)]),
    Bad("list: page_size -1", "GET", "/v1/lattices", "page_size", params=[("page_size", -1)]),
    Bad(
        "list: forged page_token",
        "GET",
        "/v1/lattices",
        "page_token",
        params=[("page_token", "bm90LWEtdG9rZW4")],
    ),
    # --- GetField
    Bad("field: malformed id", "GET", "/v1/lattices/x/field", "id"),
    Bad("field: id not UTF-8", "GET", "/v1/lattices/%ff/field", "id"),
    Bad("field: offset -1", "GET", "/v1/lattices/{id}/field", "offset", params=[("offset", -1)]),
    Bad(
        "field: offset past the end",
        "GET",
        "/v1/lattices/{id}/field",
        "offset",
        params=[("offset", SIZE * SIZE)],
    ),
    Bad(
        "field: offset not a number",
        "GET",
        "/v1/lattices/{id}/field",
        "offset",
        params=[("offset", "first")],
    ),
    Bad("field: limit -5", "GET", "/v1/lattices/{id}/field", "limit", params=[("limit", -5)]),
    Bad(
        "field: limit too large",
        "GET",
        "/v1/lattices/{id}/field",
        "limit",
        params=[("limit", 1_048_577)],
    ),
    # --- TransformLattice
    Bad("transform: no op", "POST", "/v1/lattices/{id}/transform", "op", body={}),
    Bad(
        "transform: flip axis as a string",
        "POST",
        "/v1/lattices/{id}/transform",
        "flip.axis",
        body={"flip": {"axis": "1"}},
    ),
    Bad(
        "transform: id not UTF-8",
        "POST",
        "/v1/lattices/%ff/transform",
        "id",
        body={"flip": {"axis": 0}},
    ),
    Bad(
        "transform: malformed id",
        "POST",
        "/v1/lattices/nope/transform",
        "id",
        body={"flip": {"axis": 0}},
    ),
    Bad(
        "transform: xor key above 32 bits",
        "POST",
        "/v1/lattices/{id}/transform",
        "xor.key",
        body={"xor": {"key": 2**32}},
    ),
    Bad(
        "transform: rotate in one axis",
        "POST",
        "/v1/lattices/{id}/transform",
        "rotate.axis_b",
        body={"rotate": {"axis_a": 1, "axis_b": 1, "quarter_turns": 1}},
    ),
    Bad(
        "transform: rotate axis out of range",
        "POST",
        "/v1/lattices/{id}/transform",
        "rotate.axis_a",
        body={"rotate": {"axis_a": 2, "axis_b": 0}},
    ),
    Bad(
        "transform: flip axis out of range",
        "POST",
        "/v1/lattices/{id}/transform",
        "flip.axis",
        body={"flip": {"axis": -1}},
    ),
    Bad(
        "transform: scale by 0",
        "POST",
        "/v1/lattices/{id}/transform",
        "scale.factor",
        body={"scale": {"factor": 0}},
    ),
    Bad(
        "transform: offset NaN",
        "POST",
        "/v1/lattices/{id}/transform",
        "offset.value",
        body={"offset": {"value": "NaN"}},
    ),
    Bad(
        "transform: denormalize std 0",
        "POST",
        "/v1/lattices/{id}/transform",
        "denormalize.std",
        body={"denormalize": {"mean": 0, "std": 0}},
    ),
    Bad(
        "transform: if_version 0",
        "POST",
        "/v1/lattices/{id}/transform",
        "if_version",
        body={"flip": {"axis": 0}, "if_version": "0"},
    ),
    # --- FindPath
    Bad(
        "path: one start coordinate",
        "GET",
        "/v1/lattices/{id}/path",
        "start",
        params=pt([0], [1, 1]),
    ),
    Bad(
        "path: three end coordinates",
        "GET",
        "/v1/lattices/{id}/path",
        "end",
        params=pt([0, 0], [1, 1, 1]),
    ),
    Bad(
        "path: end out of range",
        "GET",
        "/v1/lattices/{id}/path",
        "end",
        params=pt([0, 0], [0, SIZE]),
    ),
    Bad(
        "path: start negative", "GET", "/v1/lattices/{id}/path", "start", params=pt([-1, 0], [1, 1])
    ),
    Bad(
        "path: start blocked",
        "GET",
        "/v1/lattices/{id}/path",
        "start",
        params=pt(list(BLOCKED), [1, 1]),
    ),
    Bad(
        "path: start not a number",
        "GET",
        "/v1/lattices/{id}/path",
        "start",
        params=pt(["a", 0], [1, 1]),
    ),
    Bad(
        "path: unknown algorithm",
        "GET",
        "/v1/lattices/{id}/path",
        "algorithm",
        params=pt([0, 0], [1, 1], ("algorithm", "FASTEST")),
    ),
    Bad(
        "path: unknown cost",
        "GET",
        "/v1/lattices/{id}/path",
        "cost",
        params=pt([0, 0], [1, 1], ("cost", "EUROS")),
    ),
    Bad(
        "path: BFS with FIELD cost",
        "GET",
        "/v1/lattices/{id}/path",
        "algorithm",
        params=pt([0, 0], [1, 1], ("algorithm", "BFS"), ("cost", "FIELD")),
    ),
    Bad(
        "path: CATALYTIC with FIELD cost",
        "GET",
        "/v1/lattices/{id}/path",
        "algorithm",
        params=pt([0, 0], [1, 1], ("algorithm", "CATALYTIC"), ("cost", "FIELD")),
    ),
    Bad("path: malformed id", "GET", "/v1/lattices/0/path", "id", params=pt([0, 0], [1, 1])),
    # --- AnalyzeLattice
    Bad("analysis: malformed id", "GET", "/v1/lattices/abc/analysis", "id"),
]


@pytest.fixture(scope="module")
def client(stack: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def world(client: httpx.Client) -> tuple[Tenant, str]:
    tenant = register_and_login(client)
    field = np.ones(SIZE * SIZE, dtype="<f4")
    field[BLOCKED[0] * SIZE + BLOCKED[1]] = np.inf
    reply = client.post(
        "/v1/lattices",
        json={
            "name": "shared",
            "dimensions": 2,
            "size": SIZE,
            "values": base64.b64encode(field.tobytes()).decode(),
        },
        headers=tenant.headers,
    )
    assert reply.status_code == 200, reply.text
    return tenant, reply.json()["id"]


def named_fields(body: dict[str, Any]) -> set[str]:
    fields = {
        violation["field"]
        for detail in body.get("details", [])
        for violation in detail.get("field_violations", [])
    }
    # Envoy's transcoder names the field at the start of its message instead.
    prefix, _, _ = body.get("message", "").partition(":")
    return fields | {prefix.strip()}


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 25
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_malformed_request_is_4xx_naming_the_field(
    client: httpx.Client, world: tuple[Tenant, str], case: Bad
) -> None:
    tenant, lattice_id = world
    body = None
    if case.body is not None:
        body = {key: value for key, value in case.body.items() if value is not None}
    reply = client.request(
        case.method,
        case.route.format(id=lattice_id),
        params=case.params or None,  # None keeps a query written into the route
        json=body,
        headers=tenant.headers,
    )
    assert 400 <= reply.status_code < 500, f"{reply.status_code}: {reply.text}"
    answer = reply.json()
    assert case.field in named_fields(answer) or f"'{case.field}'" in answer["message"], answer
    # The shared lattice was never changed by any of these.
    lattice = client.get(f"/v1/lattices/{lattice_id}", headers=tenant.headers).json()
    assert lattice["version"] == "1"
