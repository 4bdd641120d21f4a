"""Which JSON keys each REST request body may carry, read from the descriptor set.

Envoy's transcoder drops body keys that the request message does not define (envoy#46623; no
switch turns that off), so a typo such as `"dimension": 3` would be accepted and ignored. The
gateway's `unknown_fields` Lua filter refuses such bodies instead; this module gives it the
schema: for every `google.api.http` binding with a body, which request path (HTTP method + path
template) it serves and which message the body must match, and for every message reachable from
there, the keys it accepts — each field under its proto name and its JSON (lowerCamel) name, as
the transcoder accepts both. `render.py` writes the result into the Lua filter as a table literal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

FieldType = descriptor_pb2.FieldDescriptorProto

# Messages whose JSON form is not an object of their fields (RFC 3339 strings, any JSON value,
# `@type` plus the packed message...): the keys below them are not checked.
OPAQUE_MESSAGES = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.api.HttpBody",  # the raw body, not JSON
    }
)

# A message's accepted keys: key -> the full name of the message checked below it, or None when
# anything is accepted there (scalars, enums, maps, opaque messages).
Keys = dict[str, str | None]


class SchemaError(ValueError):
    """The descriptor set has a binding the gateway cannot check (bad template, missing type)."""


@dataclass(frozen=True)
class BodyRoute:
    """One REST binding whose JSON body is checked against `message`."""

    method: str  # HTTP method, upper case
    template: str  # the google.api.http path template, e.g. /v1/lattices/{id}/transform
    pattern: str  # the same as an anchored Lua pattern
    message: str  # full name of the message the body must match
    rpc: str  # full RPC name, for the reader of the rendered config


@dataclass(frozen=True)
class Schema:
    routes: tuple[BodyRoute, ...]  # most specific first: the first match is the transcoder's
    messages: Mapping[str, Keys]  # every message reachable from a route's body


def json_name(proto_name: str) -> str:
    """protoc's default JSON name: underscores dropped, the letter after each one upper-cased."""
    parts = proto_name.split("_")
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


def load(descriptor: Path) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes())


def _index(
    files: descriptor_pb2.FileDescriptorSet,
) -> dict[str, descriptor_pb2.DescriptorProto]:
    """Every message (nested ones too) by full name, without the leading dot."""
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def add(prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            name = f"{prefix}.{message.name}" if prefix else message.name
            found[name] = message
            add(name, message.nested_type)

    for file in files.file:
        add(file.package, file.message_type)
    return found


def _bindings(rule: http_pb2.HttpRule) -> Iterator[tuple[str, str, str]]:
    """(HTTP method, path template, body) of a rule and its additional bindings."""
    for binding in [rule, *rule.additional_bindings]:
        kind = binding.WhichOneof("pattern")
        if kind is None:
            continue
        if kind == "custom":
            yield binding.custom.kind.upper(), binding.custom.path, binding.body
        else:
            yield kind.upper(), getattr(binding, kind), binding.body


# ------------------------------------------------------------------ path templates
_LUA_MAGIC = re.compile(r"([\^$()%.\[\]*+\-?])")
_ONE, _REST = "[^/]+", ".*"


def _atoms(template: str) -> tuple[list[str], str]:
    """A template's segments, variables expanded (`{name=shelves/*}` is `shelves`, `*`; `{id}`
    is `*`), and its `:verb` ("" when none). Grammar: google/api/http.proto."""
    if not template.startswith("/"):
        raise SchemaError(f"path template {template!r} does not start with /")
    raw: list[str] = []
    current, depth = "", 0
    for char in template[1:]:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "/" and depth == 0:
            raw.append(current)
            current = ""
        else:
            current += char
    verb = ""
    if ":" in current and "}" not in current[current.rfind(":") :]:
        current, verb = current[: current.rfind(":")], current[current.rfind(":") :]
    raw.append(current)
    atoms: list[str] = []
    for segment in raw:
        if segment.startswith("{") and segment.endswith("}"):
            _, _, inner = segment[1:-1].partition("=")
            atoms.extend((inner or "*").split("/"))
        else:
            atoms.append(segment)
    if any(not atom or "{" in atom or "}" in atom for atom in atoms):
        raise SchemaError(f"path template {template!r} has an empty or malformed segment")
    return atoms, verb


def lua_pattern(template: str) -> str:
    """An anchored Lua pattern matching the request paths of a google.api.http template.

    `{id}` and `*` match one segment, `**` any rest, `{name=a/*}` its own sub-template; the
    `:verb` suffix is literal. Lua patterns have no alternation, which templates never need.
    """
    atoms, verb = _atoms(template)
    pieces = [
        _ONE if atom == "*" else _REST if atom == "**" else _LUA_MAGIC.sub(r"%\1", atom)
        for atom in atoms
    ]
    return "^/" + "/".join(pieces) + _LUA_MAGIC.sub(r"%\1", verb) + "$"


def _specificity(template: str) -> tuple[int, ...]:
    """Sort key: at each segment a literal beats `*`/`{var}`, which beats `**` (as Envoy's path
    matcher prefers), so the first pattern that matches picks the transcoder's binding."""
    atoms, _ = _atoms(template)
    return tuple(2 if atom == "**" else 1 if atom == "*" else 0 for atom in atoms)


# ------------------------------------------------------------------ the schema
def build(files: descriptor_pb2.FileDescriptorSet, services: Iterable[str]) -> Schema:
    """The body schema of every REST binding of `services` (full names) in `files`."""
    wanted = set(services)
    messages = _index(files)
    keys: dict[str, Keys] = {}

    def checked(type_name: str) -> str | None:
        """The message name when keys below a field of this type are checked, else None."""
        name = type_name.lstrip(".")
        message = messages.get(name)
        if message is None:
            raise SchemaError(f"message {name} is not in the descriptor set")
        if name in OPAQUE_MESSAGES or message.options.map_entry:
            return None
        if name not in keys:
            keys[name] = {}  # placed first: recursive messages refer to themselves
            accepted: Keys = {}
            for field in message.field:
                below = checked(field.type_name) if field.type == FieldType.TYPE_MESSAGE else None
                accepted[field.name] = below
                accepted[field.json_name or json_name(field.name)] = below
            keys[name] = accepted
        return name

    routes: list[BodyRoute] = []
    for file in files.file:
        for service in file.service:
            full_service = f"{file.package}.{service.name}"
            if full_service not in wanted:
                continue
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                for verb, template, body in _bindings(rule):
                    if not body:
                        continue  # no body: the transcoder reads none
                    root = _body_message(messages, method.input_type.lstrip("."), body)
                    target = checked(root) if root is not None else None
                    if target is None:
                        continue  # the body is a scalar, a map or opaque: nothing to check
                    routes.append(
                        BodyRoute(
                            method=verb,
                            template=template,
                            pattern=lua_pattern(template),
                            message=target,
                            rpc=f"{full_service}.{method.name}",
                        )
                    )
    routes.sort(key=lambda route: (_specificity(route.template), route.template, route.method))
    return Schema(routes=tuple(routes), messages=keys)


def _body_message(
    messages: Mapping[str, descriptor_pb2.DescriptorProto], request: str, body: str
) -> str | None:
    """The message type the JSON body holds: the request for `*`, else the body field's type
    (None when that field is not a message: its JSON is a scalar, nothing to check)."""
    if body == "*":
        return request
    current = request
    for part in body.split("."):
        message = messages.get(current)
        if message is None:
            raise SchemaError(f"message {current} is not in the descriptor set")
        field = next((f for f in message.field if f.name == part), None)
        if field is None:
            raise SchemaError(f"body field {body!r} is not a field of {request}")
        if field.type != FieldType.TYPE_MESSAGE:
            return None
        current = field.type_name.lstrip(".")
    return current


# ------------------------------------------------------------------ as Lua
def lua_string(text: str) -> str:
    """A Lua string literal for any text: printable ASCII as is, other bytes as \\ddd."""
    out = []
    for byte in text.encode():
        if byte in b'"\\':
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")  # always three digits: a digit after it stays a digit
    return '"' + "".join(out) + '"'


def to_lua(schema: Schema) -> str:
    """`{routes = {...}, messages = {...}}` as a Lua table constructor, one entry a line.

    routes: `{method, pattern, message}` in match order; messages: name -> {key = below}, where
    `below` is a message name (its keys are checked) or `true` (anything is accepted).
    """
    lines = ["{", "  routes = {"]
    for route in schema.routes:
        lines.append(
            f"    {{{lua_string(route.method)}, {lua_string(route.pattern)}, "
            f"{lua_string(route.message)}}},  -- {route.rpc}"
        )
    lines += ["  },", "  messages = {"]
    for name in sorted(schema.messages):
        entries = ", ".join(
            f"[{lua_string(key)}] = {lua_string(below) if below is not None else 'true'}"
            for key, below in sorted(schema.messages[name].items())
        )
        lines.append(f"    [{lua_string(name)}] = {{{entries}}},")
    lines += ["  },", "}"]
    return "\n".join(lines)
