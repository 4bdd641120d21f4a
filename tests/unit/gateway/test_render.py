"""gateway/render.py: the body schema and the header limit land in the rendered config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.render import TRANSCODED_SERVICES, GatewayConfig, RenderError, lua_program, render


@pytest.fixture(scope="module")
def rendered() -> str:
    return render(GatewayConfig())


def lua_block(text: str, filter_name: str) -> list[str]:
    """The lines of the inline Lua source of the named filter, as rendered, without the YAML
    block scalar's indentation."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(f"- name: {filter_name}"))
    begin = next(i for i in range(start, len(lines)) if lines[i].endswith("inline_string: |")) + 1
    indent = len(lines[begin]) - len(lines[begin].lstrip())
    block = []
    for line in lines[begin:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line[indent:])
    return block


def test_the_schema_stays_inside_the_lua_block(rendered: str) -> None:
    block = lua_block(rendered, "catalytic.request_checks")
    source = "\n".join(block)
    assert 'package.preload["schema"] = function(...)\nreturn {' in source
    assert '{"POST", "^/v1/lattices$", "catalytic.lattice.v1.CreateLatticeRequest"},' in source
    assert '["catalytic.lattice.v1.RandomFill"] = {' in source
    # Every binding with its path variables, and the JSON type of each body key.
    assert '{"GET", "^/v1/lattices/([^/]+)$", {"id"}, false},' in source
    assert (
        '{"POST", "^/v1/webhooks/([^/]+)/deliveries/([^/]+)/resend$", {"id", "delivery_id"}, '
        "false}," in source
    )
    assert '["dimensions"] = "int32"' in source
    assert '["event_types"] = "string[]"' in source
    assert "function envoy_on_request(handle)" in source  # the code after the schema is there


def test_each_lua_filter_gets_its_program_and_the_modules_it_requires(rendered: str) -> None:
    checks = "\n".join(lua_block(rendered, "catalytic.request_checks"))
    for module in ("schema", "json", "text", "status", "transcoder_errors"):
        assert f'package.preload["{module}"] = function(...)' in checks
    # Lua's `$` reaches Envoy as written: the template's `$$` escaping is not applied to it.
    assert '"^(%-?)(%d+)$")' in checks
    headers = "\n".join(lua_block(rendered, "envoy.filters.http.lua"))
    assert 'package.preload["retry_after"] = function(...)' in headers
    assert 'package.preload["json"]' not in headers
    assert headers.rstrip().endswith("end")  # gateway/lua/headers.lua, last


def test_a_lua_module_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "main.lua").write_text('local m = require("nowhere")\n')
    with pytest.raises(RenderError, match=r"nowhere\.lua does not exist"):
        lua_program("main", directory=tmp_path)


def test_lua_modules_that_require_each_other_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "main.lua").write_text('local a = require("a")\n')
    (tmp_path / "a.lua").write_text('local b = require("b")\nreturn {}\n')
    (tmp_path / "b.lua").write_text('local a = require("a")\nreturn {}\n')
    with pytest.raises(RenderError, match="main -> a -> b -> a"):
        lua_program("main", directory=tmp_path)


def test_a_bundle_lists_each_module_once_before_its_users(tmp_path: Path) -> None:
    (tmp_path / "main.lua").write_text('local a = require("a")\nlocal b = require("b")\n')
    (tmp_path / "a.lua").write_text('local b = require("b")\nreturn {}\n')
    (tmp_path / "b.lua").write_text("return {}\n")
    program = lua_program("main", {"b": "{1}"}, directory=tmp_path)
    assert program.count('package.preload["b"]') == 1
    assert program.index('package.preload["b"]') < program.index('package.preload["a"]')
    assert "return {1}" in program
    assert program.endswith('local a = require("a")\nlocal b = require("b")')


def test_the_transcoder_serves_the_services_whose_bodies_are_checked(rendered: str) -> None:
    assert f"services: {json.dumps(list(TRANSCODED_SERVICES))}" in rendered


def test_the_filter_runs_after_the_buffer_and_before_the_transcoder(rendered: str) -> None:
    order = [
        rendered.index("- name: envoy.filters.http.buffer"),
        rendered.index("- name: catalytic.request_checks"),
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


def test_slow_clients_are_cut_within_30_seconds_by_default(rendered: str) -> None:
    assert "request_timeout: 30s\n" in rendered
    assert "request_headers_timeout: 10s\n" in rendered


def test_request_timeouts_come_from_the_environment() -> None:
    config = GatewayConfig.from_env(
        {"GATEWAY_REQUEST_TIMEOUT_S": "3", "GATEWAY_REQUEST_HEADERS_TIMEOUT_S": "2"}
    )
    text = render(config)
    assert "request_timeout: 3s\n" in text
    assert "request_headers_timeout: 2s\n" in text


@pytest.mark.parametrize(("request_s", "headers_s"), [(0, 0), (5, 10), (30, 0), (7200, 10)])
def test_request_timeouts_must_be_ordered_and_bounded(request_s: int, headers_s: int) -> None:
    with pytest.raises(RenderError, match="GATEWAY_REQUEST_TIMEOUT_S"):
        render(GatewayConfig(request_timeout_s=request_s, request_headers_timeout_s=headers_s))


def test_grpc_on_a_rest_path_goes_to_the_internal_415_listener(rendered: str) -> None:
    route = rendered.index("route: {cluster: unsupported_media_type")
    assert rendered.index("match: {path_separated_prefix: /v1/lattices") > route
    assert "internal_listener: {}" in rendered
    assert "status: 415" in rendered
    assert "envoy.bootstrap.internal_listener" in rendered
