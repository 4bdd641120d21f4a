"""The lattice API through Envoy, end to end: create (every fill) -> get -> list -> field ->
transforms and their inverses -> paths (against networkx) -> analysis -> delete -> 404."""

from __future__ import annotations

import base64
import itertools
import math
from typing import Any

import httpx
import networkx as nx
import numpy as np
import pytest

from services.lattice.engine.field import blocked_mask, checksum
from services.lattice.engine.fills import RandomFill, make_field
from services.lattice.engine.geometry import Grid
from tests.e2e.helpers import Tenant, assert_status_body, set_plan

pytestmark = pytest.mark.e2e

NOT_FOUND = 5
RANDOM = {"seed": 11, "low": 0.5, "high": 4.0, "blocked_fraction": 0.25}
ALGORITHMS = ("AUTO", "BFS", "DIJKSTRA", "ASTAR", "CATALYTIC")


def create(gateway: httpx.Client, tenant: Tenant, body: dict[str, Any], route: str = "") -> Any:
    reply = gateway.post(f"/v1/lattices{route}", json=body, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return reply.json()


def read_field(gateway: httpx.Client, tenant: Tenant, lattice_id: str, vertices: int) -> np.ndarray:
    """The whole field, page by page (a small page size, to exercise offsets)."""
    pages: list[bytes] = []
    offset = 0
    while offset < vertices:
        reply = gateway.get(
            f"/v1/lattices/{lattice_id}/field",
            params={"offset": offset, "limit": 50},
            headers=tenant.headers,
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert int(body["offset"]) == offset
        assert int(body["count"]) == min(50, vertices - offset)
        pages.append(base64.b64decode(body["values"]))
        offset += int(body["count"])
    return np.frombuffer(b"".join(pages), dtype="<f4")


def transform(
    gateway: httpx.Client, tenant: Tenant, lattice_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    reply = gateway.post(f"/v1/lattices/{lattice_id}/transform", json=body, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def path(
    gateway: httpx.Client,
    tenant: Tenant,
    lattice_id: str,
    start: tuple[int, ...],
    end: tuple[int, ...],
    **query: str,
) -> httpx.Response:
    params: list[tuple[str, str | int]] = [("start", c) for c in start]
    params += [("end", c) for c in end]
    params += list(query.items())
    return gateway.get(f"/v1/lattices/{lattice_id}/path", params=params, headers=tenant.headers)


def open_graph(grid: Grid, field: np.ndarray) -> nx.DiGraph:
    """The lattice's open vertices; the edge u -> v weighs field[v] (entering v costs it)."""
    graph = nx.DiGraph()
    blocked = blocked_mask(field)
    for v in range(grid.vertex_count):
        if blocked[v]:
            continue
        graph.add_node(v)
        coords = grid.coordinates_of(v)
        for axis, stride in enumerate(grid.strides):
            if coords[axis] + 1 < grid.size and not blocked[v + stride]:
                graph.add_edge(v, v + stride, weight=float(field[v + stride]))
                graph.add_edge(v + stride, v, weight=float(field[v]))
    return graph


def assert_valid_path(grid: Grid, field: np.ndarray, body: dict[str, Any], s: int, t: int) -> None:
    vertices = body["vertices"]
    assert vertices[0] == s
    assert vertices[-1] == t
    assert body["hops"] == len(vertices) - 1
    blocked = blocked_mask(field)
    for u, v in itertools.pairwise(vertices):
        assert grid.manhattan(u, v) == 1, f"{u} and {v} are not neighbours"
        assert not blocked[v]


def test_the_whole_lattice_workflow(gateway: httpx.Client, tenant: Tenant) -> None:
    # --- create, with every fill (and both create routes)
    grid = Grid(2, 12)
    random_fill = RandomFill(**RANDOM)  # type: ignore[arg-type]
    lattice = create(
        gateway, tenant, {"name": "random", "dimensions": 2, "size": 12, "random": RANDOM}
    )
    expected = make_field(grid, random_fill)
    assert lattice["checksum"] == checksum(expected)
    assert (lattice["vertex_count"], lattice["edge_count"], lattice["version"]) == (
        "144",
        "264",
        "1",
    )
    constant = create(
        gateway,
        tenant,
        {"name": "constant", "dimensions": 3, "size": 4, "constant": {"value": 2.5}},
        route="/create",
    )
    assert constant["checksum"] == checksum(np.full(64, 2.5, "<f4"))
    raw = np.linspace(0, 1, 27, dtype="<f4")
    values = create(
        gateway,
        tenant,
        {
            "name": "values",
            "dimensions": 3,
            "size": 3,
            "values": base64.b64encode(raw.tobytes()).decode(),
        },
    )
    assert values["checksum"] == checksum(raw)

    # --- get, list, field
    reply = gateway.get(f"/v1/lattices/{lattice['id']}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json() == lattice
    listed = gateway.get("/v1/lattices", params={"page_size": 2}, headers=tenant.headers).json()
    assert [item["id"] for item in listed["lattices"]] == [values["id"], constant["id"]]
    rest = gateway.get(
        "/v1/lattices", params={"page_token": listed["next_page_token"]}, headers=tenant.headers
    ).json()
    assert [item["id"] for item in rest["lattices"]] == [lattice["id"]]
    field = read_field(gateway, tenant, lattice["id"], 144)
    assert field.tobytes() == expected.tobytes()
    assert read_field(gateway, tenant, values["id"], 27).tobytes() == raw.tobytes()

    # --- transforms: the exact ones and their inverses restore the checksum bit for bit
    version = 1
    for op in (
        {"xor": {"key": 305419896}},
        {"rotate": {"axis_a": 0, "axis_b": 1, "quarter_turns": 1}},
        {"rotate": {"axis_a": 1, "axis_b": 0, "quarter_turns": 6}},
        {"flip": {"axis": 1}},
    ):
        done = transform(gateway, tenant, lattice["id"], {**op, "if_version": str(version)})
        assert int(done["lattice"]["version"]) == version + 1
        assert done["lattice"]["checksum"] != lattice["checksum"]
        assert done["device"] in ("cpu", "gpu")
        assert done["elapsed_ms"] >= 0
        undone = transform(gateway, tenant, lattice["id"], done["inverse"])
        version += 2
        assert int(undone["lattice"]["version"]) == version
        assert undone["lattice"]["checksum"] == lattice["checksum"]
    # A stale if_version changes nothing: 409 ABORTED.
    reply = gateway.post(
        f"/v1/lattices/{lattice['id']}/transform",
        json={"flip": {"axis": 0}, "if_version": "1"},
        headers=tenant.headers,
    )
    assert_status_body(reply, 409, 10)
    # ... the arithmetic ones to float rounding, never changing which vertices are blocked.
    for op in ({"scale": {"factor": 3.0}}, {"offset": {"value": 1.5}}, {"normalize": {}}):
        done = transform(gateway, tenant, lattice["id"], op)
        transform(gateway, tenant, lattice["id"], done["inverse"])
        version += 2
        now = read_field(gateway, tenant, lattice["id"], 144)
        np.testing.assert_array_equal(blocked_mask(now), blocked_mask(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(now[finite], expected[finite], rtol=1e-5)
    # Back to the exact original for the paths below.
    field = read_field(gateway, tenant, lattice["id"], 144)
    reply = gateway.get(f"/v1/lattices/{lattice['id']}", headers=tenant.headers)
    current = reply.json()
    assert int(current["version"]) == version
    assert current["checksum"] == checksum(field)

    # --- paths: every algorithm is optimal, as networkx finds it
    graph = open_graph(grid, field)
    largest = max(nx.weakly_connected_components(graph), key=len)
    s, t = min(largest), max(largest)
    start, end = grid.coordinates_of(s), grid.coordinates_of(t)
    hops = nx.shortest_path_length(graph, s, t)
    cheapest = nx.dijkstra_path_length(graph, s, t, weight="weight")
    for algorithm in ALGORITHMS:
        reply = path(gateway, tenant, lattice["id"], start, end, algorithm=algorithm)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert_valid_path(grid, field, body, s, t)
        assert body["hops"] == hops, algorithm
        assert body["cost"] == hops
        assert body["field_checksum_before"] == body["field_checksum_after"] == current["checksum"]
        assert int(body["extra_bytes"]) > 0
        if algorithm != "AUTO":
            assert body["algorithm"] == algorithm
    for algorithm in ("AUTO", "DIJKSTRA", "ASTAR"):
        reply = path(gateway, tenant, lattice["id"], start, end, algorithm=algorithm, cost="FIELD")
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert_valid_path(grid, field, body, s, t)
        assert math.isclose(body["cost"], cheapest, rel_tol=1e-9), algorithm
        assert math.isclose(body["cost"], sum(float(field[v]) for v in body["vertices"][1:]))
    # Nothing blocked and UNIT cost: AUTO answers with the closed form, no search memory.
    reply = path(gateway, tenant, constant["id"], (0, 0, 0), (3, 3, 3))
    assert reply.status_code == 200, reply.text
    assert (reply.json()["hops"], reply.json()["extra_bytes"]) == (9, "0")
    # No path: 404 with a message, not an error.
    walled = create(
        gateway,
        tenant,
        {
            "name": "walled",
            "dimensions": 1,
            "size": 3,
            "values": base64.b64encode(np.array([1, np.inf, 1], "<f4").tobytes()).decode(),
        },
    )
    assert_status_body(path(gateway, tenant, walled["id"], (0,), (2,)), 404, NOT_FOUND)

    # --- analysis, against networkx's components
    reply = gateway.get(f"/v1/lattices/{lattice['id']}/analysis", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    analysis = reply.json()
    assert analysis["vertex_count"] == "144"
    assert int(analysis["blocked_count"]) == int(np.count_nonzero(blocked_mask(field)))
    assert int(analysis["component_count"]) == nx.number_weakly_connected_components(graph)
    assert analysis["memory_bytes"] == "576"
    assert int(analysis["adjacency_list_bytes"]) > 0

    # --- delete, then every route is 404
    reply = gateway.delete(f"/v1/lattices/{lattice['id']}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {}
    lattice_id = lattice["id"]
    for method, route, kwargs in (
        ("GET", f"/v1/lattices/{lattice_id}", {}),
        ("DELETE", f"/v1/lattices/{lattice_id}", {}),
        ("GET", f"/v1/lattices/{lattice_id}/field", {}),
        ("POST", f"/v1/lattices/{lattice_id}/transform", {"json": {"flip": {"axis": 0}}}),
        ("GET", f"/v1/lattices/{lattice_id}/path", {"params": {"start": 0, "end": 1}}),
        ("GET", f"/v1/lattices/{lattice_id}/analysis", {}),
    ):
        reply = gateway.request(method, route, headers=tenant.headers, **kwargs)
        assert_status_body(reply, 404, NOT_FOUND)


def test_the_plan_limit_names_plan_and_limit(gateway: httpx.Client, tenant: Tenant) -> None:
    reply = gateway.post(
        "/v1/lattices",
        json={"name": "big", "dimensions": 3, "size": 22, "constant": {"value": 1}},
        headers=tenant.headers,
    )
    assert_status_body(reply, 429, 8)
    assert "free" in reply.json()["message"]
    assert "10,000" in reply.json()["message"]


def test_a_professional_values_upload_passes_the_gateway(
    stack: Any, gateway: httpx.Client, tenant: Tenant
) -> None:
    """1M vertices as base64 JSON (~5.4 MB) fit GATEWAY_MAX_REQUEST_BYTES; more is 413."""
    set_plan(stack, tenant, "professional")
    field = np.random.default_rng(5).random(1_000_000, dtype=np.float32).astype("<f4")
    body = {
        "name": "upload",
        "dimensions": 3,
        "size": 100,
        "values": base64.b64encode(field.tobytes()).decode(),
    }
    assert 5_000_000 < len(str(body)) < 6_000_000
    reply = gateway.post("/v1/lattices", json=body, headers=tenant.headers, timeout=60)
    assert reply.status_code == 200, reply.text[:500]
    assert reply.json()["checksum"] == checksum(field)
    oversized = {**body, "name": "x" * 10, "values": "A" * (9 * 1024 * 1024)}
    reply = gateway.post("/v1/lattices", json=oversized, headers=tenant.headers, timeout=60)
    assert reply.status_code == 413, reply.text[:500]


def test_the_lattice_metrics(stack: Any, gateway: httpx.Client, tenant: Tenant) -> None:
    lattice = create(gateway, tenant, {"name": "m", "dimensions": 2, "size": 8, "random": RANDOM})
    reply = path(gateway, tenant, lattice["id"], (0, 0), (0, 1), algorithm="DIJKSTRA")
    assert reply.status_code in (200, 400, 404), reply.text
    transform(gateway, tenant, lattice["id"], {"xor": {"key": 1}})
    text = httpx.get(stack.metrics_url("lattice"), timeout=10, trust_env=False).text
    for line in (
        'catalytic_lattice_operations_total{algorithm="random",device="cpu",op="fill",'
        'outcome="ok"}',
        'catalytic_lattice_operations_total{algorithm="xor",device="cpu",op="transform",'
        'outcome="ok"}',
        'catalytic_lattice_compute_seconds_count{device="cpu",op="transform"}',
        "catalytic_lattice_pool_queue_depth ",
        "catalytic_lattice_cache_hits_total ",
        "catalytic_lattice_cache_misses_total ",
        "catalytic_lattice_cache_bytes ",
    ):
        assert line in text, line
    # No tenant or lattice ids as labels.
    assert tenant.tenant_id not in text
    assert lattice["id"] not in text
