"""gateway/render.py: the body schema and the header limit land in the rendered config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.render import TRANSCODED_SERVICES, GatewayConfig, RenderError, render


@pytest.fixture(scope="module")
def rendered() -> str:
    return render(GatewayConfig())


def lua_block(text: str, filter_name: str) -> list[str]:
    """The lines of the inline Lua source of the named filter, as rendered."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(f"- name: {filter_name}"))
    begin = next(i for i in range(start, len(lines)) if lines[i].endswith("inline_string: |")) + 1
    indent = len(lines[begin]) - len(lines[begin].lstrip())
    block = []
    for line in lines[begin:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line)
    return block


def test_the_schema_stays_inside_the_lua_block(rendered: str) -> None:
    block = lua_block(rendered, "catalytic.unknown_fields")
    source = "\n".join(block)
    assert "local SCHEMA = {" in source
    assert '{"POST", "^/v1/lattices$", "catalytic.lattice.v1.CreateLatticeRequest"},' in source
    assert '["catalytic.lattice.v1.RandomFill"] = {' in source
    assert "function envoy_on_request(handle)" in source  # the code after the schema is there


def test_the_transcoder_serves_the_services_whose_bodies_are_checked(rendered: str) -> None:
    assert f"services: {json.dumps(list(TRANSCODED_SERVICES))}" in rendered


def test_the_filter_runs_after_the_buffer_and_before_the_transcoder(rendered: str) -> None:
    order = [
        rendered.index("- name: envoy.filters.http.buffer"),
        rendered.index("- name: catalytic.unknown_fields"),
        rendered.index("- name: envoy.filters.http.grpc_json_transcoder"),
    ]
    assert order == sorted(order)


def test_request_headers_are_limited(rendered: str) -> None:
    assert "max_request_headers_kb: 8\n" in rendered


def test_a_missing_descriptor_set_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="make protos"):
        render(GatewayConfig(descriptor=tmp_path / "missing.pb"))


def test_a_broken_descriptor_set_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pb"
    broken.write_bytes(b"\xff\xff not a descriptor set")
    with pytest.raises(RenderError, match=r"broken\.pb"):
        render(GatewayConfig(descriptor=broken))
