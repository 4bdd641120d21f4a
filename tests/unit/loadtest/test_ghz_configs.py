"""loadtest/ghz/*.json are ghz configs that name RPCs and request fields that exist.

ghz is not installed here, so nothing runs them; this keeps them valid against the protos:
JSON in ghz's config format (keys of its config file), a `call` that the descriptor set of
`make protos` has, and `data` whose keys are fields of that RPC's request message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.render import DEFAULT_DESCRIPTOR

GHZ_DIR = Path(__file__).resolve().parents[3] / "loadtest" / "ghz"
CONFIGS = sorted(GHZ_DIR.glob("*.json"))
# The keys of ghz's config file (its runner config's JSON names) that these configs may use.
GHZ_KEYS = {
    "name",
    "proto",
    "protoset",
    "import-paths",
    "call",
    "host",
    "insecure",
    "authority",
    "cacert",
    "cert",
    "key",
    "cname",
    "skipTLS",
    "total",
    "duration",
    "max-duration",
    "concurrency",
    "connections",
    "rps",
    "timeout",
    "connect-timeout",
    "keepalive",
    "data",
    "data-file",
    "metadata",
    "metadata-file",
    "output",
    "format",
    "tags",
}
PORTS = {"auth": "50051", "lattice": "50052", "webhook": "50053"}


@pytest.fixture(scope="module")
def pool() -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet.FromString(DEFAULT_DESCRIPTOR.read_bytes())
    result = descriptor_pool.DescriptorPool()
    for proto in files.file:
        result.Add(proto)
    return result


def check_data(message: Descriptor, data: dict[str, Any], where: str) -> None:
    for key, value in data.items():
        field = message.fields_by_name.get(key) or next(
            (f for f in message.fields if f.json_name == key), None
        )
        assert field is not None, f"{where}: {message.full_name} has no field {key!r}"
        if field.type == FieldDescriptor.TYPE_MESSAGE and isinstance(value, dict):
            check_data(field.message_type, value, f"{where}.{key}")


def test_there_are_configs_for_the_main_rpcs() -> None:
    calls = {json.loads(path.read_text())["call"].rsplit(".", 1)[1] for path in CONFIGS}
    assert {
        "GetLattice",
        "ListLattices",
        "FindPath",
        "GetCurrentUser",
        "Login",
        "ListWebhooks",
        "GetJwks",
    } <= calls


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_names_an_existing_rpc_and_fields(
    path: Path, pool: descriptor_pool.DescriptorPool
) -> None:
    config = json.loads(path.read_text())
    assert set(config) <= GHZ_KEYS, f"not ghz config keys: {set(config) - GHZ_KEYS}"
    assert (path.parent / config["proto"]).is_file()
    for directory in config.get("import-paths", []):
        assert (path.parent / directory).is_dir()
    service_name, method_name = config["call"].rsplit(".", 1)
    method = pool.FindServiceByName(service_name).methods_by_name.get(method_name)
    assert method is not None, f"{service_name} has no RPC {method_name}"
    check_data(method.input_type, config.get("data", {}), path.name)
    host, port = config["host"].rsplit(":", 1)
    assert host == "127.0.0.1"
    service = service_name.split(".")[1]
    # Straight to the service that serves the RPC, or through the gateway (8080).
    assert port in (PORTS[service], "8080"), f"{path.name}: port {port} is not {service}'s"
    assert ("duration" in config) != ("total" in config), "ghz takes one of duration and total"
