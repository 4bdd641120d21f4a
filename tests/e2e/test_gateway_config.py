"""The gateway config: it renders and validates, and its route table agrees with the protos."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from devstack import Stack
from devstack.binaries import envoy
from devstack.services import SERVICES
from gateway.render import GatewayConfig, RenderError, render, split_addr

pytestmark = pytest.mark.e2e

CLUSTER_OF_SERVICE = {full: name for name, full in SERVICES.items()}
LONG_RUNNING = re.compile(r"/v1/lattices/[^/]+/(path|transform)")


def http_rules(descriptor: Path) -> Iterator[tuple[str, str, str]]:
    """(full service name, HTTP verb, path template) for every REST binding in the protos."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes())
    for file in files.file:
        for service in file.service:
            full = f"{file.package}.{service.name}"
            if full not in CLUSTER_OF_SERVICE:
                continue
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    verb = binding.WhichOneof("pattern")
                    assert verb is not None
                    path = binding.custom.path if verb == "custom" else getattr(binding, verb)
                    yield full, verb.upper(), path


def _headers_match(match: dict[str, Any], headers: dict[str, str]) -> bool:
    """The route's header matchers (exact and prefix, the kinds our template uses)."""
    for matcher in match.get("headers", []):
        value = headers.get(matcher["name"], "")
        string_match = matcher["string_match"]
        if "exact" in string_match:
            hit = value == string_match["exact"]
        elif "prefix" in string_match:
            hit = value.startswith(string_match["prefix"])
        else:
            raise AssertionError(f"header match not understood by this test: {matcher}")
        if not hit:
            return False
    return True


def first_matching_route(
    routes: list[dict[str, Any]], path: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Envoy's route selection for a path and request headers (the match kinds our template
    uses); by default a JSON POST, as REST clients send."""
    if headers is None:
        headers = {":method": "POST", "content-type": "application/json"}
    for route in routes:
        match = route["match"]
        if not _headers_match(match, headers):
            continue
        if "path" in match:
            hit = path == match["path"]
        elif "prefix" in match:
            hit = path.startswith(match["prefix"])
        elif "path_separated_prefix" in match:
            prefix = match["path_separated_prefix"]
            hit = path == prefix or path.startswith(prefix + "/")
        elif "safe_regex" in match:
            hit = re.fullmatch(match["safe_regex"]["regex"], path) is not None
        else:
            raise AssertionError(f"match kind not understood by this test: {match}")
        if hit:
            return route
    raise AssertionError(f"no route matches {path}")


def loaded_routes(stack: Stack) -> list[dict[str, Any]]:
    """The public routes Envoy actually loaded, from its admin config dump."""
    url = f"http://127.0.0.1:{stack.ports.envoy_admin}/config_dump"
    dump = httpx.get(url, timeout=10, trust_env=False).json()

    def find(node: Any) -> Iterator[list[dict[str, Any]]]:
        if isinstance(node, dict):
            # The public route table (not the internal listener's, unsupported_media_type).
            if "virtual_hosts" in node and node.get("name") == "catalytic":
                for host in node["virtual_hosts"]:
                    yield host["routes"]
            for value in node.values():
                yield from find(value)
        elif isinstance(node, list):
            for value in node:
                yield from find(value)

    # The dump shows the same route table under the listener and under the routes section.
    tables = {json.dumps(table, sort_keys=True): table for table in find(dump)}
    assert len(tables) == 1, f"expected one route table, found {len(tables)}"
    return next(iter(tables.values()))


def test_every_rest_binding_goes_to_its_own_service(stack: Stack) -> None:
    routes = loaded_routes(stack)
    rules = list(http_rules(stack.envoy.config.descriptor))
    assert rules, "the descriptor set has no google.api.http bindings"
    for service, verb, template in rules:
        path = re.sub(r"\{[^}]*\}", "x", template)
        route = first_matching_route(
            routes, path, {":method": verb, "content-type": "application/json"}
        )
        assert "route" in route, f"{verb} {template} ends in a direct response: {route}"
        grpc = first_matching_route(
            routes, path, {":method": verb, "content-type": "application/grpc"}
        )
        assert grpc["route"]["cluster"] == "unsupported_media_type", f"{verb} {template}: {grpc}"
        cluster = route["route"]["cluster"]
        assert cluster == CLUSTER_OF_SERVICE[service], f"{verb} {template} is sent to {cluster}"
        expected = "120s" if LONG_RUNNING.fullmatch(path) else "15s"
        assert route["route"]["timeout"] == expected, f"{verb} {template}: {route['route']}"


def test_native_grpc_paths_go_to_their_service(stack: Stack) -> None:
    routes = loaded_routes(stack)
    for full, cluster in CLUSTER_OF_SERVICE.items():
        route = first_matching_route(
            routes, f"/{full}/AnyMethod", {":method": "POST", "content-type": "application/grpc"}
        )
        assert route["route"]["cluster"] == cluster


def test_the_rendered_config_passes_envoys_own_validation(tmp_path: Path) -> None:
    config = GatewayConfig(
        auth_addr="auth.internal:50051",  # a name: STRICT_DNS
        lattice_addr="10.0.0.7:50052",
        access_log=str(tmp_path / "access.log"),
    )
    if not config.descriptor.is_file():
        pytest.fail(f"{config.descriptor} is missing: run `make protos`")
    path = tmp_path / "envoy.yaml"
    path.write_text(render(config))
    result = subprocess.run(
        [str(envoy()), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051, "STATIC")),
        ("[::1]:50051", ("::1", 50051, "STATIC")),
        ("lattice:50052", ("lattice", 50052, "STRICT_DNS")),
    ],
)
def test_upstream_addresses(addr: str, expected: tuple[str, int, str]) -> None:
    assert split_addr(addr) == expected


@pytest.mark.parametrize("addr", ["lattice", ":50051", "lattice:http", "lattice:70000"])
def test_bad_upstream_addresses_are_refused(addr: str) -> None:
    with pytest.raises(RenderError):
        split_addr(addr)
