"""Production smoke tests: is a deployment up and doing its job? Safe against production.

Only HTTP through the gateway (GATEWAY_URL), as the smoke tenant's user (SMOKE_EMAIL,
SMOKE_PASSWORD). Every object made is tiny, named `smoke-<UTC time>-<random>`, and deleted in a
fixture's teardown even when an assertion fails. What each test checks and how to run the suite:
docs/deployment/smoke-tests.md.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.smoke.support import Session, SmokeSettings, log_in, log_out, smoke_name
from tests.unit.webhook.receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.smoke]

SIDE = 8  # the lattices are 2-D 8 x 8: 64 vertices, 256 bytes of field
# From 2**18 vertices a unit-cost BFS runs on the GPU under COMPUTE_DEVICE=auto
# (CostModel.bfs_vertices in services/lattice/engine/compute.py): 3-D 64 x 64 x 64, 1 MiB.
GPU_DIMENSIONS, GPU_SIDE = 3, 64

Json = dict[str, Any]


def ok(reply: httpx.Response) -> Json:
    """The JSON body of a 200 reply; the status and body in the failure message otherwise."""
    assert reply.status_code == 200, f"{reply.request.method} {reply.request.url.path}: " + (
        f"{reply.status_code} {reply.text[:500]}"
    )
    body: Json = reply.json()
    return body


def until(condition: Callable[[], Json | None], within: float, what: str) -> Json:
    """Polls `condition` until it returns a value; fails naming `what` after `within` s."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value is not None:
            return value
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.2)


def jwt_header(token: str) -> Json:
    """The (unverified) header of a JWT: enough to read its `kid`."""
    segment = token.split(".")[0]
    header: Json = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return header


@pytest.fixture
def lattice_factory(api: httpx.Client, user: Session) -> Iterator[Callable[..., Json]]:
    """Creates `smoke-` lattices; every one is deleted afterwards, whatever the test did."""
    created: list[str] = []

    def create(dimensions: int = 2, side: int = SIDE) -> Json:
        reply = api.post(
            "/v1/lattices",
            json={
                "name": smoke_name(),
                "dimensions": dimensions,
                "size": side,
                "constant": {"value": 1.0},
            },
            headers=user.headers,
        )
        lattice = ok(reply)
        created.append(lattice["id"])
        return lattice

    yield create
    for lattice_id in created:
        reply = api.delete(f"/v1/lattices/{lattice_id}", headers=user.headers)
        assert reply.status_code in (200, 404), f"clean-up of lattice {lattice_id}: {reply.text}"


@pytest.fixture
def lattice(lattice_factory: Callable[..., Json]) -> Json:
    """One 8 x 8 lattice with every vertex 1.0."""
    return lattice_factory()


# ---------------------------------------------------------------- gateway and documents


def test_gateway_is_healthy(api: httpx.Client) -> None:
    """/healthz: 200 only while Envoy sees a healthy auth, lattice and webhook endpoint."""
    reply = api.get("/healthz")
    assert ok(reply) == {"status": "ok"}


def test_jwks_publishes_the_key_that_signs_access_tokens(api: httpx.Client, user: Session) -> None:
    keys = ok(api.get("/.well-known/jwks.json"))["keys"]
    assert keys, "the JWKS is empty"
    assert all(key.get("kid") and key.get("kty") for key in keys), keys
    assert not any("d" in key for key in keys), "the JWKS publishes a private key"
    assert jwt_header(user.access_token)["kid"] in {key["kid"] for key in keys}


def test_openapi_document_is_served(api: httpx.Client) -> None:
    reply = api.get("/openapi.json")
    document = ok(reply)
    assert reply.headers["content-type"].startswith("application/json")
    assert document["openapi"].startswith("3.")
    assert {"/v1/auth/login", "/v1/lattices", "/v1/webhooks"} <= set(document["paths"])


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_is_served(api: httpx.Client, page: str) -> None:
    reply = api.get(page)
    assert reply.status_code == 200, reply.text[:500]
    assert reply.headers["content-type"].startswith("text/html")
    assert "openapi.json" in reply.text


# ---------------------------------------------------------------- each service, database, Redis
# The gateway exposes no per-service health route (gRPC health stays internal), so each service
# answers one cheap authenticated read: a 200 means the service is up, reached its PostgreSQL
# (the read) and Redis (every authenticated call checks the revocation list there, failing
# closed).


def test_auth_service_answers(api: httpx.Client, smoke: SmokeSettings, user: Session) -> None:
    me = ok(api.get("/v1/users/me", headers=user.headers))
    assert me["email"] == smoke.email.lower()


def test_lattice_service_answers(api: httpx.Client, user: Session) -> None:
    body = ok(api.get("/v1/lattices", params={"page_size": 1}, headers=user.headers))
    assert isinstance(body.get("lattices", []), list)


def test_webhook_service_answers(api: httpx.Client, user: Session) -> None:
    body = ok(api.get("/v1/webhooks", params={"page_size": 1}, headers=user.headers))
    assert isinstance(body.get("webhooks", []), list)


def test_a_call_without_credentials_is_refused(api: httpx.Client) -> None:
    reply = api.get("/v1/users/me")
    assert reply.status_code == 401, reply.text
    assert reply.json()["code"] == 16  # UNAUTHENTICATED, as a google.rpc.Status body


def test_an_unknown_lattice_is_a_clean_404(api: httpx.Client, user: Session) -> None:
    reply = api.get("/v1/lattices/00000000-0000-4000-8000-000000000000", headers=user.headers)
    assert reply.status_code == 404, reply.text
    assert reply.json()["code"] == 5  # NOT_FOUND


# ---------------------------------------------------------------- log-in, refresh, Redis


def test_log_in_and_refresh(api: httpx.Client, smoke: SmokeSettings) -> None:
    if not smoke.has_credentials:
        pytest.skip("SMOKE_EMAIL and SMOKE_PASSWORD are not set (the smoke tenant's user)")
    reply = api.post("/v1/auth/login", json={"email": smoke.email, "password": smoke.password})
    pair = ok(reply)
    session = Session(pair["access_token"], pair["refresh_token"])
    try:
        assert pair["token_type"] == "Bearer"
        assert 0 < pair["expires_in"] <= 3600
        refreshed = ok(api.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}))
        assert refreshed["refresh_token"] != pair["refresh_token"]
        session = Session(refreshed["access_token"], refreshed["refresh_token"])
        ok(api.get("/v1/users/me", headers=session.headers))
    finally:
        log_out(api, session)


def test_log_out_revokes_the_token_in_every_service(
    api: httpx.Client, smoke: SmokeSettings, user: Session
) -> None:
    """Logout writes the token's id to Redis; auth and lattice then read it there and refuse."""
    session = log_in(api, smoke)
    ok(api.get("/v1/users/me", headers=session.headers))
    ok(
        api.post(
            "/v1/auth/logout",
            json={"refresh_token": session.refresh_token},
            headers=session.headers,
        )
    )
    for route in ("/v1/users/me", "/v1/lattices"):
        reply = api.get(route, headers=session.headers)
        assert reply.status_code == 401, f"{route} after logout: {reply.status_code} {reply.text}"


# ---------------------------------------------------------------- a small lattice


def test_lattice_create_read_delete(api: httpx.Client, user: Session, lattice: Json) -> None:
    assert lattice["name"].startswith("smoke-")
    assert (lattice["dimensions"], lattice["size"], lattice["vertex_count"]) == (2, SIDE, "64")
    read = ok(api.get(f"/v1/lattices/{lattice['id']}", headers=user.headers))
    assert (read["version"], read["checksum"]) == (lattice["version"], lattice["checksum"])
    field = ok(
        api.get(
            f"/v1/lattices/{lattice['id']}/field",
            params={"offset": 0, "limit": 64},
            headers=user.headers,
        )
    )
    values = struct.unpack("<64f", base64.b64decode(field["values"]))
    assert set(values) == {1.0}
    ok(api.delete(f"/v1/lattices/{lattice['id']}", headers=user.headers))
    reply = api.get(f"/v1/lattices/{lattice['id']}", headers=user.headers)
    assert reply.status_code == 404, reply.text


def test_lattice_transform_and_its_inverse(api: httpx.Client, user: Session, lattice: Json) -> None:
    """XOR with a key, then the inverse it returns: the field is back bit for bit."""
    url = f"/v1/lattices/{lattice['id']}/transform"
    first = ok(api.post(url, json={"xor": {"key": 305419896}}, headers=user.headers))
    assert first["device"] in ("cpu", "gpu")
    assert first["lattice"]["checksum"] != lattice["checksum"]
    assert int(first["lattice"]["version"]) > int(lattice["version"])
    back = ok(api.post(url, json=first["inverse"], headers=user.headers))
    assert back["lattice"]["checksum"] == lattice["checksum"]


@pytest.mark.parametrize("algorithm", ["BFS", "CATALYTIC"])
def test_lattice_path(api: httpx.Client, user: Session, lattice: Json, algorithm: str) -> None:
    """Corner to corner of the 8 x 8 lattice: 14 hops; CATALYTIC restores the field it used."""
    body = ok(
        api.get(
            f"/v1/lattices/{lattice['id']}/path",
            params={
                "start": [0, 0],
                "end": [SIDE - 1, SIDE - 1],
                "algorithm": algorithm,
                "cost": "UNIT",
            },
            headers=user.headers,
        )
    )
    assert body["hops"] == 2 * (SIDE - 1)
    assert (body["vertices"][0], body["vertices"][-1]) == (0, SIDE * SIDE - 1)
    assert body["device"] in ("cpu", "gpu")
    assert body["field_checksum_before"] == body["field_checksum_after"] == lattice["checksum"]


# ---------------------------------------------------------------- webhooks


@pytest.fixture
def webhook(api: httpx.Client, user: Session, smoke: SmokeSettings) -> Iterator[Json]:
    """An endpoint for SMOKE_WEBHOOK_URL (webhook.test events only), deleted afterwards."""
    if not smoke.webhook_url:
        pytest.skip("SMOKE_WEBHOOK_URL is not set (a receiver that answers 2xx to a POST)")
    created = ok(
        api.post(
            "/v1/webhooks",
            json={
                "url": smoke.webhook_url,
                "event_types": ["webhook.test"],
                "description": smoke_name(),
            },
            headers=user.headers,
        )
    )
    try:
        yield created["webhook"]
    finally:
        reply = api.delete(f"/v1/webhooks/{created['webhook']['id']}", headers=user.headers)
        assert reply.status_code in (200, 404), f"clean-up of the webhook: {reply.text}"


def test_webhook_test_delivery_reaches_the_receiver(
    api: httpx.Client,
    user: Session,
    smoke: SmokeSettings,
    webhook: Json,
    local_receiver: Receiver | None,
) -> None:
    """The delivery log reports a 2xx answer from the receiver (all a production run can see)."""
    queued = ok(api.post(f"/v1/webhooks/{webhook['id']}/test", headers=user.headers))
    assert queued["event_type"] == "webhook.test"

    def settled() -> Json | None:
        rows = ok(api.get(f"/v1/webhooks/{webhook['id']}/deliveries", headers=user.headers))
        mine = [row for row in rows.get("deliveries", []) if row["id"] == queued["id"]]
        assert not any(row["status"] == "DEAD" for row in mine), f"delivery gave up: {mine}"
        return next((row for row in mine if row["status"] == "SUCCEEDED"), None)

    delivered = until(settled, smoke.timeout_s, f"a 2xx answer from {smoke.webhook_url}")
    assert 200 <= delivered["response_status"] < 300, delivered
    if local_receiver is not None:
        received = local_receiver.wait_for("/smoke", 1, timeout=smoke.timeout_s)
        assert received[-1].headers["webhook-id"] == queued["event_id"]


# ---------------------------------------------------------------- GPU


def test_gpu_runs_a_computation_big_enough_for_it(
    api: httpx.Client, smoke: SmokeSettings, user: Session, lattice_factory: Callable[..., Json]
) -> None:
    """With SMOKE_EXPECT_GPU=1: a unit-cost BFS on 64 x 64 x 64 reports device `gpu`."""
    if not smoke.expect_gpu:
        pytest.skip("SMOKE_EXPECT_GPU is not 1 (the deployment does not say it has a GPU)")
    try:
        big = lattice_factory(dimensions=GPU_DIMENSIONS, side=GPU_SIDE)
    except AssertionError as exc:
        pytest.fail(
            f"could not create a {GPU_SIDE}^{GPU_DIMENSIONS} lattice: the smoke tenant needs the "
            f"professional plan (docs/deployment/smoke-tests.md). {exc}",
            pytrace=False,
        )
    body = ok(
        api.get(
            f"/v1/lattices/{big['id']}/path",
            params={
                "start": [0] * GPU_DIMENSIONS,
                "end": [GPU_SIDE - 1] * GPU_DIMENSIONS,
                "algorithm": "BFS",
                "cost": "UNIT",
            },
            headers=user.headers,
            timeout=max(smoke.timeout_s, 60),
        )
    )
    assert body["hops"] == GPU_DIMENSIONS * (GPU_SIDE - 1)
    assert body["device"] == "gpu", (
        "the path ran on the CPU: no usable GPU in the lattice service, COMPUTE_DEVICE=cpu, or "
        "too little free GPU memory (see catalytic_lattice_gpu_fallbacks in its /metrics)"
    )
