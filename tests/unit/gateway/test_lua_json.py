"""gateway/lua/json.lua: JSON bodies against the request schema, by the proto3 JSON mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import schema
from tests.unit.gateway.lua_harness import Lua

MESSAGE = "test.v1.Everything"
# One key of each JSON type gateway/schema.py gives (its `Kinds`), under one message.
KINDS = {
    "i32": "int32",
    "u32": "uint32",
    "i64": "int64",
    "u64": "uint64",
    "f": "float",
    "d": "double",
    "b": "bool",
    "s": "string",
    "by": "bytes",
    "e": "enum",
    "child": "message",
    "children": "message[]",
    "m": "map",
    "any": "any",
    "ints": "int32[]",
    "names": "string[]",
}
SCHEMA = schema.Schema(
    routes=(),
    messages={
        MESSAGE: {
            key: MESSAGE if kind.startswith("message") else None for key, kind in KINDS.items()
        }
    },
    kinds={MESSAGE: KINDS},
)


@pytest.fixture(scope="module")
def lua() -> Lua:
    lua = Lua()
    lua.module("json")
    lua.strict()
    return lua


@pytest.fixture(scope="module")
def check(lua: Lua) -> Any:
    """body text -> None, or the problem: {"field", "description"} or {"field", "unknown"}."""
    walker = lua.module("json")
    table = lua.runtime.execute(("return " + schema.to_lua(SCHEMA)).encode())

    def problem(text: str | bytes) -> Any:
        return lua.call(walker.body_problem, text, MESSAGE, table)

    return problem


def wrong(field: str, kind: str, lua: Lua) -> dict[str, str]:
    describe = lua.module("json").DESCRIBE
    return {"field": field, "description": describe[kind.encode()].decode()}


# ------------------------------------------------------------------ well-formed bodies
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"i32": 7, "u32": 4294967295, "i64": "-9223372036854775808", "u64": "18446744073709551615"},
        {"i32": -2147483648, "i64": 9007199254740993, "u64": 0},
        {"i32": 2.0},  # a whole number with a fraction part
        {"i32": 1e3, "i64": 1e18},  # exponents: read as doubles, in range
        {"f": 3.4e38, "d": 1e308},
        {"f": "NaN", "d": "-Infinity"},
        {"f": "Infinity", "d": 0},
        {"b": True, "s": "", "by": "AAEC"},
        {"e": "ANY_NAME", "ints": [1, 2, -3], "names": ["a", "b"]},
        {"e": 2},
        {"e": -1},
        {"m": {"anything": {"at": ["all"]}}, "any": [1, {"x": None}]},
        {"child": {"child": {"i32": 1}}, "children": [{"s": "x"}, {}]},
        {key: None for key in KINDS},  # null is every field's default
    ],
    ids=json.dumps,
)
def test_proto3_json_values_pass(check: Any, body: dict[str, Any]) -> None:
    assert check(json.dumps(body)) is None


def test_blanks_anywhere_pass(check: Any) -> None:
    assert check(' \n\t{ "i32" :\r\n 1 , "names" : [ "a" ,\t"b" ] }\n ') is None
    assert check(json.dumps({"child": {"ints": [1, 2]}}, indent=4)) is None


# ------------------------------------------------------------------ wrong JSON types
@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        ({"i32": "2"}, "i32", "int32"),  # never coerced from a string
        ({"i32": 2.5}, "i32", "int32"),
        ({"i32": 2147483648}, "i32", "int32"),
        ({"i32": -2147483649}, "i32", "int32"),
        ({"i32": True}, "i32", "int32"),
        ({"u32": -1}, "u32", "uint32"),
        ({"u32": 4294967296}, "u32", "uint32"),
        ({"i64": "12ab"}, "i64", "int64"),
        ({"i64": "9223372036854775808"}, "i64", "int64"),
        ({"i64": -9223372036854775809}, "i64", "int64"),
        ({"i64": "1.5"}, "i64", "int64"),
        ({"i64": 1e19}, "i64", "int64"),
        ({"u64": "-1"}, "u64", "uint64"),
        ({"u64": 18446744073709551616}, "u64", "uint64"),
        ({"u64": "018446744073709551616"}, "u64", "uint64"),
        ({"f": 1e39}, "f", "float"),
        ({"f": "1.5"}, "f", "float"),
        ({"f": "nan"}, "f", "float"),  # the proto3 spellings only
        ({"d": "Infinity "}, "d", "double"),
        ({"d": True}, "d", "double"),
        ({"b": "yes"}, "b", "bool"),
        ({"b": 1}, "b", "bool"),
        ({"s": 7}, "s", "string"),
        ({"s": ["a"]}, "s", "string"),
        ({"s": {"a": 1}}, "s", "string"),
        ({"by": False}, "by", "bytes"),
        ({"e": 1.5}, "e", "enum"),
        ({"e": True}, "e", "enum"),
        ({"child": 5}, "child", "message"),
        ({"child": [{}]}, "child", "message"),
        ({"m": "x"}, "m", "map"),
        ({"names": "x"}, "names", "list"),
        ({"names": {"0": "x"}}, "names", "list"),
        ({"names": ["a", 1]}, "names[1]", "string"),
        ({"ints": [1, "2"]}, "ints[1]", "int32"),
        ({"children": [{}, {"s": 1}]}, "children[1].s", "string"),
        ({"child": {"child": {"b": "true"}}}, "child.child.b", "bool"),
    ],
    ids=str,
)
def test_a_value_of_the_wrong_type_names_its_field(
    check: Any, lua: Lua, body: dict[str, Any], field: str, kind: str
) -> None:
    assert check(json.dumps(body)) == wrong(field, kind, lua)


def test_the_first_problem_is_the_one_reported(check: Any, lua: Lua) -> None:
    assert check('{"s": 1, "b": "x"}') == wrong("s", "string", lua)


def test_a_body_that_is_not_an_object_is_the_bodys_problem(check: Any, lua: Lua) -> None:
    assert check("[1]") == wrong("body", "message", lua)
    assert check('"text"') == wrong("body", "message", lua)


# ------------------------------------------------------------------ unknown keys
def test_an_unknown_key_is_named_with_its_path(check: Any) -> None:
    assert check('{"i33": 1}') == {"field": "i33", "unknown": True}
    assert check('{"child": {"children": [{}, {"x": 1}]}}') == {
        "field": "child.children[1].x",
        "unknown": True,
    }


def test_keys_below_maps_and_opaque_values_are_not_checked(check: Any) -> None:
    assert check('{"m": {"x": 1}, "any": {"y": {"z": 2}}}') is None


# ------------------------------------------------------------------ escapes
@pytest.mark.parametrize(
    ("key", "known"),
    [
        ('"na\\u006des"', True),  # "names": escapes are decoded as the transcoder decodes them
        ('"\\u0069\\u0033\\u0032"', True),  # "i32"
        ('"i\\u00332"', True),
        ('"s\\u0000"', False),  # NUL is a character of the key, not its end
        ('"\\ud83d\\ude00"', False),  # a surrogate pair: one character, U+1F600
        ('"\\"s\\""', False),
        ('"s\\/"', False),
    ],
)
def test_escaped_keys_are_decoded(check: Any, key: str, known: bool) -> None:
    problem = check("{" + key + ": null}")
    if known:
        assert problem is None
    else:
        assert problem["unknown"] is True
        assert problem["field"] == json.loads(key)


def test_escapes_inside_values_are_skipped_not_decoded(check: Any) -> None:
    assert check('{"s": "tab\\t \\"quoted\\" \\\\ \\u00e9 \\ud834\\udd1e \\u0000"}') is None
    assert check('{"s": "\\\\"}') is None  # an escaped backslash before the closing quote


@pytest.mark.parametrize("key", ['"\\ud800"', '"\\udc00"', '"\\ud800\\u0041"', '"\\ud800x"'])
def test_lone_surrogates_in_keys_are_left_to_the_transcoder(check: Any, key: str) -> None:
    assert check("{" + key + ": 1}") is None


# ------------------------------------------------------------------ not JSON
NOT_JSON = {"field": "body", "description": "is not valid JSON"}


@pytest.mark.parametrize(
    "text",
    [
        '{"s": "a"',
        '{"s": "a"} x',
        '{"s": "a",}',
        '{"s" "a"}',
        "{s: 1}",
        '{"s": tru}',
        '{"i32": -}',
        '{"s\\x": 1}',  # an escape JSON does not have, in a key
        '{"s\\u12": 1}',
        '{"any": [1 2]}',
        '{"s": "unterminated}',
    ],
)
def test_text_that_is_not_json_is_the_bodys_problem(check: Any, text: str) -> None:
    assert check(text) == NOT_JSON


@pytest.mark.parametrize(
    "text",
    ['{"child":', '{"children":', '{"names": ', '{"s":', '{"i32":', '{"m":', '{"any":'],
)
def test_a_body_cut_short_after_a_key_is_not_json(check: Any, text: str) -> None:
    """Not "child: must be a JSON object": the client's value is not wrong, it is missing."""
    assert check(text) == NOT_JSON


def test_whitespace_only_is_not_json(check: Any) -> None:
    assert check(" \n") == NOT_JSON


# ------------------------------------------------------------------ work bounds
def test_nesting_deeper_than_the_bound_is_left_to_the_transcoder(check: Any) -> None:
    deep = '{"any": ' + "[" * 40 + "]" * 40 + "}"
    assert check(deep) is None
    shallow = '{"any": ' + "[" * 20 + '{"x": 1}' + "]" * 20 + ', "i33": 1}'
    assert check(shallow) == {"field": "i33", "unknown": True}


def test_more_values_than_the_bound_are_left_to_the_transcoder(check: Any) -> None:
    many = '{"ints": [' + ",".join(["1"] * 30_000) + '], "i33": 1}'
    assert check(many) is None
    few = '{"ints": [' + ",".join(["1"] * 1_000) + '], "i33": 1}'
    assert check(few) == {"field": "i33", "unknown": True}


def test_a_long_string_is_one_step(check: Any) -> None:
    """The base64 `values` of a big lattice: skipped with one search, an unknown key after it
    still found."""
    text = json.dumps({"by": "A" * 5_000_000, "i33": 1})
    assert check(text) == {"field": "i33", "unknown": True}


# ------------------------------------------------------------------ read_string
@pytest.mark.parametrize(
    ("text", "decoded", "rest"),
    [
        ('"page_size: x\\n"}', "page_size: x\n", "}"),
        ('"\\u00e9\\ud83d\\ude00\\u0000"', "\u00e9\U0001f600\u0000", ""),
        ('"a\\"b" tail', 'a"b', " tail"),
    ],
)
def test_read_string_decodes_the_string_at_a_position(
    lua: Lua, text: str, decoded: str, rest: str
) -> None:
    value, after = lua.call(lua.module("json").read_string, "x" + text, 2)
    assert value == decoded
    assert ("x" + text)[after - 1 :] == rest


@pytest.mark.parametrize("text", ['"open', '"\\ud800"', '"\\q"'])
def test_read_string_is_nil_for_what_it_cannot_decode(lua: Lua, text: str) -> None:
    assert lua.call(lua.module("json").read_string, text, 1) is None


# ------------------------------------------------------------------ any JSON at all
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from([*KINDS, "x", "é"]), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.sampled_from([*KINDS, "x"]), JSON_VALUES, max_size=5))
def test_any_json_object_gets_an_answer_never_an_error(check: Any, body: dict[str, Any]) -> None:
    """Whatever the JSON, the walk ends with nil or a problem naming a field: never a Lua
    error (which the filter would log, letting the body through)."""
    problem = check(json.dumps(body, ensure_ascii=bool(len(body) % 2)))
    assert problem is None or problem["field"] != "body"
