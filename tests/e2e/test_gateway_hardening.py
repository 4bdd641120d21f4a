"""Gateway hardening: security headers, CORS, `www-authenticate` on 401, the TLS listener.

The session stack's gateway allows one browser origin (tests/conftest.py), as a deployment sets
GATEWAY_CORS_ORIGINS. TLS is an option it does not set: it is tested on a second, throw-away
Envoy rendered from the stack's own config with a certificate and no CORS origin (the `make up`
default), in front of the same services.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devstack import Stack
from devstack.envoy import Envoy
from tests.e2e.helpers import assert_status_body

pytestmark = pytest.mark.e2e


@dataclasses.dataclass(frozen=True)
class Edge:
    """The throw-away gateway: plain HTTP URL, HTTPS URL and the certificate to trust."""

    url: str
    tls_url: str
    cert: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Iterator[Edge]:
    run_dir = Path(tempfile.mkdtemp(prefix="catalytic-test-edge-"))
    cert, key = _self_signed(run_dir)
    port, admin_port, tls_port = _free_port(), _free_port(), _free_port()
    config = dataclasses.replace(
        stack.envoy.config,
        gateway_port=port,
        admin_port=admin_port,
        tls_port=tls_port,
        tls_cert=cert,
        tls_key=key,
        cors_origins=(),
        access_log=str(run_dir / "access.log"),
    )
    envoy = Envoy(run_dir, config, base_id=port)
    try:
        envoy.start()
        yield Edge(envoy.url, f"https://127.0.0.1:{tls_port}", cert)
    finally:
        envoy.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def edge_client(edge: Edge) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edge.url, timeout=10, trust_env=False) as client:
        yield client


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/docs"),  # a direct response
        ("GET", "/nope"),  # no route
        ("GET", "/v1/users/me"),  # a service's error (401)
        ("GET", "/.well-known/jwks.json"),  # a service's success
        ("GET", "/v1/lattices?bogus=1"),  # the transcoder's 400
    ],
)
def test_security_headers_on_every_reply(gateway: httpx.Client, method: str, path: str) -> None:
    reply = gateway.request(method, path)
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers.get(name) == value, (path, reply.headers)
    assert "strict-transport-security" not in reply.headers  # plain HTTP
    assert reply.headers.get("server") == "gateway"


def test_missing_auth_is_401_with_www_authenticate(gateway: httpx.Client) -> None:
    reply = gateway.get("/v1/lattices")
    assert_status_body(reply, 401, 16)
    assert reply.headers["www-authenticate"].startswith("Bearer")


@pytest.fixture
def allowed_origin(stack: Stack) -> str:
    """The origin the session stack's gateway allows (GATEWAY_CORS_ORIGINS)."""
    assert stack.envoy.config.cors_origins, "the test stack must allow a CORS origin"
    return stack.envoy.config.cors_origins[0]


def preflight(client: httpx.Client, origin: str) -> httpx.Response:
    """What a browser sends before a credentialed JSON POST from another origin."""
    return client.options(
        "/v1/lattices",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )


def test_cors_preflight_from_an_allowed_origin_needs_no_credential(
    gateway: httpx.Client, allowed_origin: str
) -> None:
    reply = preflight(gateway, allowed_origin)
    assert 200 <= reply.status_code < 300, reply.text
    assert reply.headers["access-control-allow-origin"] == allowed_origin
    methods = reply.headers["access-control-allow-methods"]
    assert {"GET", "POST", "PATCH", "DELETE"} <= {method.strip() for method in methods.split(",")}
    allowed = reply.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "x-api-key" in allowed
    assert "content-type" in allowed
    assert reply.headers["access-control-max-age"] == "600"


def test_cors_actual_request_carries_allow_origin_and_exposed_headers(
    gateway: httpx.Client, allowed_origin: str
) -> None:
    reply = gateway.get("/.well-known/jwks.json", headers={"origin": allowed_origin})
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == allowed_origin
    assert "retry-after" in reply.headers["access-control-expose-headers"]


def test_cors_other_origins_get_no_allow_origin(gateway: httpx.Client) -> None:
    origin = "https://evil.example"
    assert "access-control-allow-origin" not in preflight(gateway, origin).headers
    plain = gateway.get("/.well-known/jwks.json", headers={"origin": origin})
    assert plain.status_code == 200
    assert "access-control-allow-origin" not in plain.headers


def test_cors_is_off_unless_origins_are_configured(
    edge_client: httpx.Client, allowed_origin: str
) -> None:
    """The throw-away gateway has no GATEWAY_CORS_ORIGINS (the `make up` default): even the
    session stack's allowed origin gets no allow-origin there."""
    assert "access-control-allow-origin" not in preflight(edge_client, allowed_origin).headers
    plain = edge_client.get("/.well-known/jwks.json", headers={"origin": allowed_origin})
    assert "access-control-allow-origin" not in plain.headers


def test_tls_listener_serves_the_api_with_hsts(edge: Edge) -> None:
    context = ssl.create_default_context(cafile=str(edge.cert))
    with httpx.Client(base_url=edge.tls_url, verify=context, trust_env=False) as client:
        reply = client.get("/.well-known/jwks.json")
        assert reply.status_code == 200
        assert reply.json()["keys"]
        assert reply.headers["strict-transport-security"].startswith("max-age=")
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert_status_body(client.get("/v1/users/me"), 401, 16)
    # The certificate is checked: a client that does not trust it cannot connect.
    with (
        httpx.Client(base_url=edge.tls_url, trust_env=False) as untrusting,
        pytest.raises(httpx.ConnectError),
    ):
        untrusting.get("/healthz")


def test_request_id_reaches_the_service_and_the_access_log(
    gateway: httpx.Client, stack: Stack
) -> None:
    """Envoy, the edge, replaces a client's x-request-id with its own (a client cannot choose
    the id operators search logs by) and returns it in the x-request-id header; the service
    receives that id in its gRPC metadata and logs it, and the gateway's access log has it."""
    sent = f"e2e-gateway-{uuid.uuid4().hex}"
    reply = gateway.get("/.well-known/jwks.json", headers={"x-request-id": sent})
    assert reply.status_code == 200
    request_id = reply.headers["x-request-id"]
    assert request_id != sent
    log = Path(stack.envoy.config.access_log)
    deadline = time.monotonic() + 15
    while request_id not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)  # Envoy flushes access logs every 10 s (or when its buffer fills)
    lines = [json.loads(line) for line in log.read_text().splitlines() if request_id in line]
    assert [(line["request_id"], line["path"]) for line in lines] == [
        (request_id, "/.well-known/jwks.json")
    ]
    service_log = stack.logs_dir / "auth.log"
    while request_id not in service_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    logged = [
        json.loads(line) for line in service_log.read_text().splitlines() if request_id in line
    ]
    assert [line["rpc_method"] for line in logged] == ["/catalytic.auth.v1.AuthService/GetJwks"]
