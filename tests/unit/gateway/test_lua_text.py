"""gateway/lua/text.lua: UTF-8 validation, percent-decoding, shortening, JSON string literals."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.gateway.lua_harness import Lua


@pytest.fixture(scope="module")
def lua() -> Lua:
    lua = Lua()
    lua.module("text")
    lua.strict()
    return lua


@pytest.fixture(scope="module")
def text(lua: Lua) -> Any:
    return lua.module("text")


@pytest.mark.parametrize(
    ("data", "valid"),
    [
        (b"", True),
        (b"plain ascii", True),
        ("\u00e9t\u00e9 \u20ac \U0001d11e \U0010ffff".encode(), True),
        (b"\xc3\x28", False),  # a lead byte without its continuation
        (b"\xc3", False),  # cut short
        (b"\xc0\xaf", False),  # overlong "/"
        (b"\xe0\x80\xaf", False),  # overlong, three bytes
        (b"\xed\xa0\x80", False),  # a surrogate (U+D800)
        (b"\xf4\x90\x80\x80", False),  # above U+10FFFF
        (b"\xf5\x80\x80\x80", False),
        (b"\xff\xfe", False),
        (b"\x80", False),  # a lone continuation byte
        (b"a\x00b", True),  # NUL is UTF-8 (the services refuse it, ADR 45)
    ],
)
def test_is_utf8(lua: Lua, text: Any, data: bytes, valid: bool) -> None:
    assert lua.call(text.is_utf8, data) is valid


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=12) | st.text(max_size=6).map(str.encode))
def test_is_utf8_agrees_with_python(lua: Lua, text: Any, data: bytes) -> None:
    try:
        data.decode("utf-8")
        expected = True
    except UnicodeDecodeError:
        expected = False
    assert lua.call(text.is_utf8, data) is expected


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("%C3%A9t%c3%a9", "\u00e9t\u00e9".encode()),
        ("%ff%fe", b"\xff\xfe"),
        ("100%", b"100%"),  # not an escape: kept
        ("%zz%4", b"%zz%4"),
        ("a+b", b"a+b"),  # "+" is the transcoder's business (query_param_unescape_plus)
        ("%2525", b"%25"),  # decoded once
    ],
)
def test_percent_decode(lua: Lua, text: Any, raw: str, decoded: bytes) -> None:
    assert lua.runtime.eval("function(f, t) return f(t) end")(
        text.percent_decode, raw.encode()
    ) == (decoded)


@settings(max_examples=300, deadline=None)
@given(raw=st.text(alphabet="%aZ09fF+é/", max_size=12))
def test_percent_decode_agrees_with_python(lua: Lua, text: Any, raw: str) -> None:
    decode = lua.runtime.eval("function(f, t) return f(t) end")
    assert decode(text.percent_decode, raw.encode()) == unquote_to_bytes(raw)


def test_shorten_keeps_short_text(lua: Lua, text: Any) -> None:
    assert lua.call(text.shorten, "x" * 256) == "x" * 256


def test_shorten_cuts_long_text_on_a_character_boundary(lua: Lua, text: Any) -> None:
    assert lua.call(text.shorten, "x" * 300) == "x" * 256 + "..."
    # 255 bytes, then a two-byte character across the 256-byte limit: cut before it.
    assert lua.call(text.shorten, "x" * 255 + "\u00e9" * 10) == "x" * 255 + "..."
    cut = lua.call(text.shorten, "\U0001d11e" * 100)
    assert cut == "\U0001d11e" * 64 + "..."


@pytest.mark.parametrize(
    "value", ["", "plain", 'say "hi"', "back\\slash", "tab\tnew\nline\r", "nul\x00 del\x7f", "é€"]
)
def test_json_string_is_a_json_literal_of_the_text(lua: Lua, text: Any, value: str) -> None:
    literal = lua.call(text.json_string, value)
    assert json.loads(literal) == value
    assert "\n" not in literal
    assert "\x00" not in literal


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=20))
def test_json_string_round_trips_any_text(lua: Lua, text: Any, value: str) -> None:
    assert json.loads(lua.call(text.json_string, value)) == value
