"""Runs the gateway's Lua (gateway/lua/*.lua) in-process with lupa, as Envoy's Lua filter would.

LuaJIT 2.1 when the lupa wheel has it (Envoy's Lua is LuaJIT), else Lua 5.1: the language both
implement. Lua strings are bytes: this module passes `str` as UTF-8 and returns `bytes` as
`str` when they are UTF-8. The Envoy API the filters call is faked by envoy_fake.lua.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from gateway.render import LUA_DIR, LUA_REQUIRE, lua_program

FAKE = Path(__file__).with_name("envoy_fake.lua")


def _lupa() -> ModuleType:
    for name in ("lupa.luajit21", "lupa.lua51"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("lupa has neither LuaJIT 2.1 nor Lua 5.1")


LUPA = _lupa()


def to_lua(value: Any) -> Any:
    return value.encode() if isinstance(value, str) else value


def from_lua(value: Any) -> Any:
    """Lua strings as `str` when they are UTF-8 (else `bytes`), tables as dicts or lists."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    if LUPA.lua_type(value) == "table":
        items = {from_lua(key): from_lua(item) for key, item in value.items()}
        if items and list(items) == list(range(1, len(items) + 1)):
            return list(items.values())
        return items
    return value


class Lua:
    """One Lua state: `require` finds gateway/lua/*.lua, and `schema` when one is given (the Lua
    text schema.to_lua writes). `bundled=True` loads nothing from files: only what the program
    render.py builds registers (see `filter`)."""

    def __init__(self, schema: str | None = None, *, bundled: bool = False) -> None:
        self.runtime = LUPA.LuaRuntime(encoding=None, unpack_returned_tuples=True)
        self.globals = self.runtime.globals()
        package = self.globals.package
        package.path = b"" if bundled else f"{LUA_DIR}/?.lua".encode()
        package.cpath = b""
        if schema is not None and not bundled:
            package.loaded.schema = self.runtime.execute(to_lua("return " + schema))
        self.fake = self.runtime.execute(to_lua(FAKE.read_text()))

    def strict(self) -> None:
        """From now on reading or writing an undefined global is an error (envoy_fake.lua)."""
        self.fake.strict()

    def module(self, name: str) -> Any:
        return self.globals.require(to_lua(name))

    def call(self, function: Any, *args: Any) -> Any:
        """`function(*args)` with str arguments as UTF-8; results through `from_lua`."""
        result = function(*(to_lua(arg) for arg in args))
        if isinstance(result, tuple):
            return tuple(from_lua(item) for item in result)
        return from_lua(result)

    def table(self, value: Any) -> Any:
        """A Lua table of a dict or list (nested), strings as UTF-8."""
        if isinstance(value, Mapping):
            return self.runtime.table_from({to_lua(k): self.table(v) for k, v in value.items()})
        if isinstance(value, list | tuple):
            return self.runtime.table_from([self.table(item) for item in value])
        return to_lua(value)


@dataclass(frozen=True)
class Outcome:
    """What a filter did with one request or reply."""

    response: dict[str, Any] | None  # {"headers": ..., "body": ...} when it answered itself
    headers: dict[str, Any]  # the headers as the filter left them
    body: Any  # the body as the filter left it (None: none)
    metadata: dict[str, Any]
    logs: list[Any]
    body_calls: int  # how often the filter called handle:body() (each buffers the body)

    @property
    def status(self) -> str | None:
        return None if self.response is None else self.response["headers"][":status"]


class Filter:
    """A filter program (gateway/lua/<entry>.lua) loaded like Envoy loads it: from the files with
    their `require`s, or (`bundled=True`) as the one chunk render.py writes into the config."""

    def __init__(self, entry: str, schema: str | None = None, *, bundled: bool = False) -> None:
        self.lua = Lua(schema, bundled=bundled)
        if bundled:
            generated = {"schema": schema} if schema is not None else None
            source = lua_program(entry, generated)
        else:
            source = (LUA_DIR / f"{entry}.lua").read_text()
        self.lua.runtime.execute(to_lua(source))
        if not bundled:
            # Load every module now, so that their top-level locals are set before strict().
            for name in LUA_REQUIRE.findall(source):
                self.lua.module(name)
        self.lua.strict()

    def _run(self, hook: str, headers: Mapping[str, Any], body: str | bytes | None) -> Outcome:
        handle = self.lua.fake.handle(self.lua.table(dict(headers)), to_lua(body))
        self.lua.fake.run(self.lua.globals[hook.encode()], handle)
        buffer = handle.buffer
        return Outcome(
            response=from_lua(handle.response) if handle.response is not None else None,
            headers={from_lua(k): from_lua(v) for k, v in handle.headers_now.items()},
            body=None if buffer is None else from_lua(buffer.bytes),
            metadata=from_lua(handle.metadata) or {},
            logs=from_lua(handle.logs) or [],
            body_calls=handle.body_calls,
        )

    def request(
        self, method: str, path: str | bytes, body: str | bytes | None = None, **headers: Any
    ) -> Outcome:
        """envoy_on_request; header names with `_` for `-` (content_type=...)."""
        names = {key.replace("_", "-"): value for key, value in headers.items()}
        return self._run("envoy_on_request", {":method": method, ":path": path, **names}, body)

    def request_headers(self, headers: Mapping[str, str]) -> Outcome:
        return self._run("envoy_on_request", headers, None)

    def response(self, status: int, body: str | bytes | None = None, **headers: str) -> Outcome:
        names = {key.replace("_", "-"): value for key, value in headers.items()}
        return self._run("envoy_on_response", {":status": str(status), **names}, body)
