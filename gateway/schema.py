"""What each REST request may carry, read from the descriptor set: body keys and their JSON types,
path variables.

Envoy's transcoder drops body keys that the request message does not define (envoy#46623; no
switch turns that off), so a typo such as `"dimension": 3` would be accepted and ignored. The
gateway's `request_checks` Lua filter refuses such bodies instead; this module gives it the
schema: for every `google.api.http` binding with a body, which request path (HTTP method + path
template) it serves and which message the body must match, and for every message reachable from
there, the keys it accepts — each field under its proto name and its JSON (lowerCamel) name, as
the transcoder accepts both — and the JSON type each key must hold (proto3 JSON mapping), so that
`"dimensions": "2"` is refused instead of coerced. It also lists every binding (with or without a
body) with its path variables, so the filter can refuse percent-escapes that do not decode to
UTF-8 before the transcoder builds a request a service cannot parse. `render.py` writes the result
into the Lua filter as a table literal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
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

# The JSON type of each scalar field type (proto3 JSON mapping). 64-bit integers are strings in
# canonical proto3 JSON, numbers are accepted too; float and double take "NaN", "Infinity" and
# "-Infinity" as strings.
SCALAR_KINDS: Mapping[int, str] = {
    FieldType.TYPE_INT32: "int32",
    FieldType.TYPE_SINT32: "int32",
    FieldType.TYPE_SFIXED32: "int32",
    FieldType.TYPE_UINT32: "uint32",
    FieldType.TYPE_FIXED32: "uint32",
    FieldType.TYPE_INT64: "int64",
    FieldType.TYPE_SINT64: "int64",
    FieldType.TYPE_SFIXED64: "int64",
    FieldType.TYPE_UINT64: "uint64",
    FieldType.TYPE_FIXED64: "uint64",
    FieldType.TYPE_FLOAT: "float",
    FieldType.TYPE_DOUBLE: "double",
    FieldType.TYPE_BOOL: "bool",
    FieldType.TYPE_STRING: "string",
    FieldType.TYPE_BYTES: "bytes",
    FieldType.TYPE_ENUM: "enum",
}
# A key's JSON type: a SCALAR_KINDS value, "message" (an object checked below), "map" (an object
# of anything), "any" (a well-known type with its own JSON form: anything); repeated fields carry
# the element's kind with "[]" (a JSON list).
Kinds = dict[str, str]


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
class PathRoute:
    """One REST binding (with or without a body) and the path variables its pattern captures."""

    method: str
    template: str
    pattern: str  # anchored Lua pattern with one capture per variable
    variables: tuple[str, ...]  # field paths of the variables, in capture order
    has_body: bool  # the binding reads a body (its content type is checked)
    rpc: str


@dataclass(frozen=True)
class Schema:
    routes: tuple[BodyRoute, ...]  # most specific first: the first match is the transcoder's
    messages: Mapping[str, Keys]  # every message reachable from a route's body
    kinds: Mapping[str, Kinds] = field(default_factory=dict)  # the same messages: key -> kind
    paths: tuple[PathRoute, ...] = ()  # every binding, most specific first
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # value names, by enum


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


def lua_capture_pattern(template: str) -> tuple[str, tuple[str, ...]]:
    """Like `lua_pattern`, with each path variable captured: the pattern and the variables'
    field paths in capture order (`/v1/{name=shelves/*}/x` -> `^/v1/(shelves/[^/]+)/x$`)."""
    _atoms(template)  # validates the template
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

    def piece(atom: str) -> str:
        return _ONE if atom == "*" else _REST if atom == "**" else _LUA_MAGIC.sub(r"%\1", atom)

    pieces: list[str] = []
    variables: list[str] = []
    for segment in raw:
        if segment.startswith("{") and segment.endswith("}"):
            name, _, inner = segment[1:-1].partition("=")
            variables.append(name)
            pieces.append("(" + "/".join(piece(atom) for atom in (inner or "*").split("/")) + ")")
        else:
            pieces.append(piece(segment))
    return "^/" + "/".join(pieces) + _LUA_MAGIC.sub(r"%\1", verb) + "$", tuple(variables)


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
    kinds: dict[str, Kinds] = {}

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
            typed: Kinds = {}
            for one in message.field:
                below = checked(one.type_name) if one.type == FieldType.TYPE_MESSAGE else None
                kind = _kind(messages, one, below)
                for key in (one.name, one.json_name or json_name(one.name)):
                    accepted[key] = below
                    typed[key] = kind
            keys[name] = accepted
            kinds[name] = typed
        return name

    routes: list[BodyRoute] = []
    paths: list[PathRoute] = []
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
                    pattern, variables = lua_capture_pattern(template)
                    paths.append(
                        PathRoute(
                            method=verb,
                            template=template,
                            pattern=pattern,
                            variables=variables,
                            has_body=bool(body),
                            rpc=f"{full_service}.{method.name}",
                        )
                    )
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
    paths.sort(key=lambda route: (_specificity(route.template), route.template, route.method))
    return Schema(
        routes=tuple(routes),
        messages=keys,
        kinds=kinds,
        paths=tuple(paths),
        enums=_enums(files, {service.rpartition(".")[0] for service in wanted}),
    )


def _kind(
    messages: Mapping[str, descriptor_pb2.DescriptorProto],
    field: descriptor_pb2.FieldDescriptorProto,
    below: str | None,
) -> str:
    """The JSON type a field's value must have (see `Kinds`)."""
    if field.type == FieldType.TYPE_MESSAGE:
        message = messages[field.type_name.lstrip(".")]
        if message.options.map_entry:
            return "map"  # a repeated entry in the descriptor, one JSON object
        kind = "message" if below is not None else "any"
    elif field.type in SCALAR_KINDS:
        kind = SCALAR_KINDS[field.type]
    else:
        kind = "any"  # groups: not in proto3
    return kind + "[]" if field.label == FieldType.LABEL_REPEATED else kind


def _enums(
    files: descriptor_pb2.FileDescriptorSet, packages: set[str]
) -> dict[str, tuple[str, ...]]:
    """The value names of every enum (nested ones too) in `packages`, by the enum's full name."""
    found: dict[str, tuple[str, ...]] = {}

    def add_enums(prefix: str, enums: Iterable[descriptor_pb2.EnumDescriptorProto]) -> None:
        for enum in enums:
            found[f"{prefix}.{enum.name}" if prefix else enum.name] = tuple(
                value.name for value in enum.value
            )

    def add(prefix: str, message_types: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in message_types:
            name = f"{prefix}.{message.name}" if prefix else message.name
            add_enums(name, message.enum_type)
            add(name, message.nested_type)

    for file in files.file:
        if file.package in packages:
            add_enums(file.package, file.enum_type)
            add(file.package, file.message_type)
    return found


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
    """`{routes = {...}, messages = {...}, kinds = {...}, paths = {...}, enums = {...}}` as a Lua
    table constructor, one entry a line.

    routes: `{method, pattern, message}` in match order; messages: name -> {key = below}, where
    `below` is a message name (its keys are checked) or `true` (anything is accepted); kinds:
    name -> {key = JSON type}; paths: `{method, pattern with captures, {variables}, has body}` in
    match order; enums: full name -> {value names}.
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
    lines += ["  },", "  kinds = {"]
    for name in sorted(schema.kinds):
        entries = ", ".join(
            f"[{lua_string(key)}] = {lua_string(kind)}"
            for key, kind in sorted(schema.kinds[name].items())
        )
        lines.append(f"    [{lua_string(name)}] = {{{entries}}},")
    lines += ["  },", "  paths = {"]
    for path in schema.paths:
        variables = ", ".join(lua_string(variable) for variable in path.variables)
        lines.append(
            f"    {{{lua_string(path.method)}, {lua_string(path.pattern)}, {{{variables}}}, "
            f"{'true' if path.has_body else 'false'}}},  -- {path.rpc}"
        )
    lines += ["  },", "  enums = {"]
    for name in sorted(schema.enums):
        values = ", ".join(lua_string(value) for value in schema.enums[name])
        lines.append(f"    [{lua_string(name)}] = {{{values}}},")
    lines += ["  },", "}"]
    return "\n".join(lines)
