"""The gateway's Lua filters (gateway/lua/request_checks.lua, headers.lua) on a fake Envoy handle.

Each filter runs twice: loaded from its files (with `require`) and as the one chunk render.py
writes into the Envoy config, with the schema of the real descriptor set. The same behaviour
through the real Envoy: tests/e2e/test_gateway_input_hardening.py, test_gateway_unknown_fields.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway import schema
from gateway.render import DEFAULT_DESCRIPTOR, TRANSCODED_SERVICES
from tests.unit.gateway.lua_harness import Filter, Lua, Outcome

SOME_ID = "00000000-0000-4000-8000-000000000000"
LATTICE = {"name": "a", "dimensions": 2, "size": 4, "constant": {"value": 1}}
JSON = {"content_type": "application/json"}
MARKED = {"catalytic.request_checks": {"reply": "400"}}


@pytest.fixture(scope="module")
def schema_lua() -> str:
    return schema.to_lua(schema.build(schema.load(DEFAULT_DESCRIPTOR), TRANSCODED_SERVICES))


@pytest.fixture(scope="module", params=["files", "bundled"])
def checks(request: pytest.FixtureRequest, schema_lua: str) -> Filter:
    return Filter("request_checks", schema_lua, bundled=request.param == "bundled")


@pytest.fixture(scope="module", params=["files", "bundled"])
def headers(request: pytest.FixtureRequest) -> Filter:
    return Filter("headers", bundled=request.param == "bundled")


def assert_bad_request(
    outcome: Outcome, field: str, description: str | None = None, message: str | None = None
) -> None:
    """A 400 google.rpc.Status naming `field`, marked for local_reply_config; its message is
    "<field>: <description>" unless another is given."""
    assert outcome.response is not None, outcome
    assert outcome.response["headers"] == {":status": "400", "content-type": "application/json"}
    body = json.loads(outcome.response["body"])
    violation = {"field": field, "description": description or body["message"].split(": ", 1)[1]}
    assert body == {
        "code": 3,
        "message": message or f"{field}: {violation['description']}",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "field_violations": [violation]}
        ],
    }
    assert outcome.metadata == MARKED


def passes(outcome: Outcome) -> bool:
    return outcome.response is None and outcome.metadata == {} and outcome.logs == []


# ------------------------------------------------------------------ path and query: UTF-8
@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/lattices/%ff%fe", "id"),
        ("DELETE", "/v1/webhooks/%c3%28", "id"),
        ("POST", f"/v1/webhooks/{SOME_ID}/deliveries/%ed%a0%80/resend", "delivery_id"),
        ("POST", f"/v1/webhooks/%80/deliveries/{SOME_ID}/resend", "id"),
        ("GET", "/v1/lattices?page_token=%c3%28", "page_token"),
        ("GET", "/v1/lattices?page_size=1&page_token=%ff", "page_token"),
        ("GET", "/v1/lattices?na%ffme=1", "na%ffme"),  # the name as sent, when that is UTF-8
        ("GET", b"/v1/lattices?\xff%ff=1", "query"),  # neither form of the name is UTF-8
    ],
)
def test_escapes_that_are_not_utf8_are_400_naming_the_parameter(
    checks: Filter, method: str, path: str | bytes, field: str
) -> None:
    assert_bad_request(
        checks.request(method, path), field, "must be valid UTF-8 once percent-decoded"
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/lattices/%C3%A9t%C3%A9"),  # valid UTF-8: the service judges the id
        ("GET", "/v1/lattices?page_token=%E2%82%AC&page_size=2"),
        ("GET", "/v1/lattices?flag&=&a=%"),  # odd but UTF-8: the transcoder's business
        ("GET", "/v1/nothing/%ff"),  # no binding: the transcoder answers 404
        ("PUT", "/v1/lattices/%ff"),  # no binding for this method
        ("GET", "/healthz"),
    ],
)
def test_utf8_escapes_and_other_paths_pass(checks: Filter, method: str, path: str) -> None:
    assert passes(checks.request(method, path))


def test_native_grpc_is_not_looked_at(checks: Filter) -> None:
    outcome = checks.request(
        "POST", "/v1/lattices/%ff", b"\x00\x00", content_type="application/grpc+proto"
    )
    assert passes(outcome)
    assert outcome.body == "\x00\x00"


# ------------------------------------------------------------------ 415
@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (
            "text/plain",
            "content-type text/plain is not supported: send JSON with "
            "content-type: application/json",
        ),
        (None, "a request body needs content-type: application/json"),
        ("", "a request body needs content-type: application/json"),
        ("application/merge-patch+json", None),
        ("application/x-www-form-urlencoded", None),
        ("application/json; charset=latin1", None),
        ("application/jsonx", None),
        (b"text/\xff", "a request body needs content-type: application/json"),  # not UTF-8
        ("x/" + "y" * 300, None),
    ],
)
def test_a_body_without_json_content_type_is_415(
    checks: Filter, content_type: str | bytes | None, message: str | None
) -> None:
    headers = {} if content_type is None else {"content_type": content_type}
    outcome = checks.request("POST", "/v1/lattices", json.dumps(LATTICE), **headers)
    assert outcome.response is not None
    assert outcome.response["headers"] == {":status": "415", "content-type": "application/json"}
    body = json.loads(outcome.response["body"])
    assert body["code"] == 3
    assert "details" not in body
    assert "application/json" in body["message"]
    if message is not None:
        assert body["message"] == message
    assert len(body["message"]) < 400  # the content type is shortened
    assert outcome.metadata == {"catalytic.request_checks": {"reply": "415"}}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        " application/json ; charset = utf-8",
    ],
)
def test_json_content_types_pass(checks: Filter, content_type: str) -> None:
    outcome = checks.request("POST", "/v1/lattices", json.dumps(LATTICE), content_type=content_type)
    assert passes(outcome)


def test_no_body_needs_no_content_type(checks: Filter) -> None:
    assert passes(checks.request("POST", "/v1/auth/logout", ""))
    assert passes(checks.request("POST", "/v1/auth/logout", None))


def test_a_binding_without_a_body_does_not_read_one(checks: Filter) -> None:
    outcome = checks.request(
        "POST", f"/v1/webhooks/{SOME_ID}/rotate-secret", '{"x": 1}', content_type="text/plain"
    )
    assert passes(outcome)


# ------------------------------------------------------------------ JSON bodies
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/lattices", {**LATTICE, "dimensions": "2"}, "dimensions"),
        ("/v1/lattices", {**LATTICE, "constant": {"value": 1e39}}, "constant.value"),
        ("/v1/lattices", {"random": {"seed": "12ab"}}, "random.seed"),
        ("/v1/lattices/create", {"name": 7}, "name"),
        (f"/v1/lattices/{SOME_ID}/transform", {"rotate": {"axis_a": "0"}}, "rotate.axis_a"),
        ("/v1/webhooks", {"url": "https://example.com/h", "event_types": [1]}, "event_types[0]"),
        ("/v1/webhooks", {"url": "https://example.com/h", "ordered": "yes"}, "ordered"),
        ("/v1/auth/login", {"email": {"a": 1}}, "email"),
    ],
)
def test_a_value_of_the_wrong_type_is_400_naming_the_field(
    checks: Filter, path: str, body: dict[str, Any], field: str
) -> None:
    assert_bad_request(checks.request("POST", path, json.dumps(body), **JSON), field)


def test_an_unknown_field_is_400_naming_it(checks: Filter) -> None:
    outcome = checks.request(
        "POST", "/v1/lattices", json.dumps({**LATTICE, "dimension": 3}), **JSON
    )
    assert_bad_request(outcome, "dimension", "unknown field", 'unknown field "dimension"')


def test_json_names_are_known_fields(checks: Filter) -> None:
    body = {"email": "a@example.com", "password": "x" * 12, "tenantName": "t"}
    assert passes(checks.request("POST", "/v1/auth/register", json.dumps(body), **JSON))


def test_an_unknown_field_too_long_to_repeat_is_shortened(checks: Filter) -> None:
    outcome = checks.request("POST", "/v1/lattices", json.dumps({"k" * 1000: 1}), **JSON)
    field = "k" * 256 + "..."
    assert_bad_request(outcome, field, "unknown field", f'unknown field "{field}"')


def test_an_unknown_field_that_is_not_utf8_is_left_to_the_transcoder(checks: Filter) -> None:
    assert passes(checks.request("POST", "/v1/lattices", b'{"\xff": 1}', **JSON))


@pytest.mark.parametrize("text", ['{"name": "a",', "[1]", '{"name": "a"} x', " "])
def test_a_body_that_is_not_a_json_object_is_400_naming_the_body(checks: Filter, text: str) -> None:
    assert_bad_request(checks.request("POST", "/v1/lattices", text, **JSON), "body")


def test_a_well_formed_body_passes_untouched(checks: Filter) -> None:
    text = json.dumps({**LATTICE, "name": 'tab\t"quoted" \u00e9 \U0001d11e'}, indent=2)
    outcome = checks.request("POST", "/v1/lattices", text, **JSON)
    assert passes(outcome)
    assert outcome.body == text


def test_a_bug_in_the_walk_is_logged_and_the_body_passes(schema_lua: str) -> None:
    checks = Filter("request_checks", schema_lua)
    checks.lua.module("json").body_problem = checks.lua.runtime.eval("function() error('boom') end")
    outcome = checks.request("POST", "/v1/lattices", json.dumps(LATTICE), **JSON)
    assert outcome.response is None
    assert len(outcome.logs) == 1
    level, message = outcome.logs[0]
    assert level == "Err"
    assert message.startswith("request_checks: ")
    assert "boom" in message


# ------------------------------------------------------------------ the transcoder's 400s
def transcoder_400(message: str) -> str:
    return json.dumps({"code": 3, "message": message}, separators=(",", ":"))


@pytest.mark.parametrize(
    ("message", "field", "description"),
    [
        (
            'page_size: invalid value "abc" for type TYPE_INT32\n',
            "page_size",
            'invalid value "abc": must be an integer from -2147483648 to 2147483647',
        ),
        (
            'algorithm: invalid value "FASTEST" for type '
            "type.googleapis.com/catalytic.lattice.v1.FindPathRequest.Algorithm",
            "algorithm",
            'invalid value "FASTEST": must be one of ALGORITHM_UNSPECIFIED, ',
        ),
        (
            'x: invalid value "1" for type type.googleapis.com/unknown.Thing',
            "x",
            'invalid value "1"',
        ),
        ('Could not find field "bogus" in the type "x.Y".', "bogus", "unknown query parameter"),
        (
            "The binding value abc of the field id is conflicting with the value def in the body.",
            "id",
            "differs between the path and the body",
        ),
        (": Root element must be a message.\n", "body", "Root element must be a message."),
        ("Unexpected end of string.\nmore detail", "body", "Unexpected end of string."),
    ],
)
def test_the_transcoders_400s_are_reshaped(
    checks: Filter, message: str, field: str, description: str
) -> None:
    outcome = checks.response(400, transcoder_400(message), **JSON)
    assert outcome.response is None
    body = json.loads(outcome.body)
    violation = body["details"][0]["field_violations"][0]
    assert violation["field"] == field
    assert violation["description"].startswith(description)
    assert body["message"] == f"{field}: {violation['description']}"
    assert "TYPE_" not in outcome.body
    assert "type.googleapis.com/catalytic" not in outcome.body


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (400, "application/json", '{"code":3,"message":"x","details":[]}'),  # a service's
        (400, "text/plain", transcoder_400("page_size: bad")),
        (404, "application/json", transcoder_400("page_size: bad")),
        (400, "application/json", '{"code":5,"message":"x"}'),
        (400, "application/json", '{"code":3,"message":"\\ud800"}'),
        (400, "application/json", '{"code":3,"message":"open'),
        (400, "application/json", transcoder_400("page_size: " + "x" * 70_000)),
    ],
)
def test_other_replies_pass_untouched(
    checks: Filter, status: int, content_type: str, body: str
) -> None:
    outcome = checks.response(status, body, content_type=content_type)
    assert outcome.response is None
    assert outcome.body == body


def test_a_long_transcoder_message_is_shortened(checks: Filter) -> None:
    outcome = checks.response(400, transcoder_400("page_size: " + "x" * 1000), **JSON)
    violation = json.loads(outcome.body)["details"][0]["field_violations"][0]
    assert violation == {"field": "page_size", "description": "x" * 256 + "..."}


def test_explain_lists_an_enums_names(schema_lua: str) -> None:
    lua = Lua(schema_lua)
    explain = lua.module("transcoder_errors").explain
    enums = lua.table({"a.B": ["B_UNSPECIFIED", "ONE"]})
    field, description = lua.call(
        explain, 'kind: invalid value "TWO" for type type.googleapis.com/a.B', enums
    )
    assert (field, description) == (
        "kind",
        'invalid value "TWO": must be one of B_UNSPECIFIED, ONE',
    )


# ------------------------------------------------------------------ the 400 body
def test_status_body_without_a_field_has_no_details() -> None:
    lua = Lua()
    assert json.loads(lua.call(lua.module("status").body, 'say "x"')) == {
        "code": 3,
        "message": 'say "x"',
    }


# ------------------------------------------------------------------ headers.lua
@pytest.mark.parametrize("name", ["a+b", "x!", "tilde~", "sp ace", "é"])
def test_header_names_grpc_cannot_carry_are_400(headers: Filter, name: str) -> None:
    outcome = headers.request_headers({":method": "GET", ":path": "/v1/users/me", name: "1"})
    assert_bad_request(outcome, "headers", "names may only use a-z, 0-9, -, _ and .")


def test_usual_header_names_pass(headers: Filter) -> None:
    names = {":method": "GET", ":path": "/", ":authority": "x", "x-api-key": "k", "a_b.c-9": "1"}
    assert passes(headers.request_headers(names))


def test_401_gets_www_authenticate(headers: Filter) -> None:
    assert headers.response(401).headers["www-authenticate"] == 'Bearer realm="catalytic"'
    kept = headers.response(401, www_authenticate="ApiKey").headers
    assert kept["www-authenticate"] == "ApiKey"


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [("1.200s", "2"), ("0.001s", "1"), ("0s", "1"), ("3s", "3"), ("59.000000001s", "60")],
)
def test_429_gets_retry_after_from_retry_info(headers: Filter, delay: str, seconds: str) -> None:
    body = json.dumps(
        {
            "code": 8,
            "message": "slow down",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retry_delay": delay}
            ],
        }
    )
    outcome = headers.response(429, body)
    assert outcome.headers["retry-after"] == seconds
    assert outcome.body == body


def test_429_keeps_a_retry_after_it_has_and_needs_retry_info(headers: Filter) -> None:
    assert (
        headers.response(429, '{"retry_delay":"3s"}', retry_after="1").headers["retry-after"] == "1"
    )
    assert "retry-after" not in headers.response(429, '{"code":8}').headers
    assert "retry-after" not in headers.response(429).headers


@pytest.mark.parametrize("status", [200, 400, 500, 503])
def test_other_replies_are_not_read(headers: Filter, status: int) -> None:
    outcome = headers.response(status, '{"retry_delay":"3s"}')
    assert "retry-after" not in outcome.headers
    assert "www-authenticate" not in outcome.headers
    assert outcome.body_calls == 0  # not buffered: the reply streams through
