"""The OpenAPI 3.1 document of the REST API, generated from the descriptor set the gateway loads.

`python -m gateway.openapi --out docs/api/openapi.json` (`make openapi`). Every operation is a
`google.api.http` binding of `render.TRANSCODED_SERVICES`, read the way Envoy's
`grpc_json_transcoder` applies it with the print options in envoy.yaml.tmpl: path variables from
the template; `body: "*"` takes every field not bound to the path, `body: "field"` that field,
and the fields left over are query parameters (repeated scalars repeat the parameter, non-repeated
messages are flattened to dotted names, repeated messages and maps cannot be passed); JSON keys
are the proto field names; proto3 JSON mapping for the values (64-bit integers as strings, enums
as their value names, bytes as base64, Timestamps as RFC 3339). Comments in the protos become
descriptions. See gateway/README.md, "OpenAPI".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from gateway import schema
from gateway.render import DEFAULT_DESCRIPTOR, TRANSCODED_SERVICES
from services.common.permissions import RULES, Access

FieldType = descriptor_pb2.FieldDescriptorProto
JSON = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
API_VERSION = "v1"


def _rpc_name(method: str) -> str:
    """`/package.Service/Method` -> `package.Service.Method`."""
    return method.strip("/").replace("/", ".")


# Who may call each RPC: the services' own table (services/common/permissions.py).
PERMISSIONS = {_rpc_name(method): rule for method, rule in RULES.items()}
# The RPCs that take no credential, and those that take one if sent (AcceptInvitation).
PUBLIC_RPCS = frozenset(rpc for rpc, rule in PERMISSIONS.items() if rule.access is Access.PUBLIC)
OPTIONAL_RPCS = frozenset(
    rpc for rpc, rule in PERMISSIONS.items() if rule.access is Access.OPTIONAL
)
_AUTH = "catalytic.auth.v1.AuthService."
# Public RPCs that check a credential in their body (a wrong password, a spent refresh token).
CREDENTIAL_RPCS = frozenset(_AUTH + name for name in ("Login", "Refresh", "AcceptInvitation"))
# RPCs without path variables that can answer NOT_FOUND.
NOT_FOUND_RPCS = frozenset(
    _AUTH + name for name in ("GetCurrentUser", "Login", "SwitchTenant", "AcceptInvitation")
)
# RPCs that can answer ALREADY_EXISTS or ABORTED (both 409 through the transcoder).
CONFLICT_RPCS = frozenset(
    {
        _AUTH + "Register",
        _AUTH + "CreateApiKey",
        _AUTH + "CreateInvitation",
        _AUTH + "AcceptInvitation",
        "catalytic.lattice.v1.LatticeService.TransformLattice",
    }
)
# Error detail types the services send (google/rpc/error_details.proto is in the descriptor set).
ERROR_DETAILS = ("google.rpc.BadRequest", "google.rpc.RetryInfo")

_SCALARS: Mapping[int, JSON] = {
    FieldType.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldType.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldType.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_UINT32: {
        "type": "integer",
        "format": "uint32",
        "minimum": 0,
        "maximum": 2**32 - 1,
    },
    FieldType.TYPE_FIXED32: {
        "type": "integer",
        "format": "uint32",
        "minimum": 0,
        "maximum": 2**32 - 1,
    },
    # proto3 JSON: 64-bit integers are decimal strings (numbers are accepted on input).
    FieldType.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldType.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldType.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldType.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldType.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldType.TYPE_BOOL: {"type": "boolean"},
    FieldType.TYPE_STRING: {"type": "string"},
    FieldType.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}

# Well-known types with a JSON form of their own (proto3 JSON mapping).
_WELL_KNOWN: Mapping[str, JSON] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object", "properties": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": {"type": ["number", "null"], "format": "double"},
    "google.protobuf.FloatValue": {"type": ["number", "null"], "format": "float"},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "format": "uint32"},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "format": "byte"},
}

# HTTP status -> (description, gRPC codes that give it), as ARCHITECTURE.md §3 and the gateway's
# local_reply_config map them.
_ERRORS: Mapping[int, str] = {
    400: "INVALID_ARGUMENT or FAILED_PRECONDITION: a malformed request (bad JSON, unknown field "
    "or query parameter, a value out of range); `details` carries a `google.rpc.BadRequest` "
    "naming the field when one is to blame.",
    401: "UNAUTHENTICATED: no credential, or an invalid, expired or revoked one.",
    403: "PERMISSION_DENIED: the credential may not do this (another tenant's resource is 404).",
    404: "NOT_FOUND: no such resource in the caller's tenant (or no such route).",
    408: "The gateway did not receive the whole request in time (its headers within 10 s, all "
    "of it within 30 s, by default): a slow or stalled client. `code` 4 DEADLINE_EXCEEDED; "
    "nothing reached a service, so sending it again is safe.",
    409: "ALREADY_EXISTS or ABORTED: the resource exists, or a concurrent change won "
    "(retry after reading it again).",
    413: "The request body is larger than the gateway accepts (8 MiB by default).",
    415: "The body is not JSON: its `content-type` is not `application/json` (a `charset` "
    "other than `utf-8` and `+json` types are refused too), or it is gRPC "
    "(`application/grpc`) sent to a REST path. `code` 3 INVALID_ARGUMENT.",
    431: "The request headers (with the path and query) are larger than 8 KiB.",
    429: "RESOURCE_EXHAUSTED: a rate limit or plan quota; `retry-after` says when to retry and "
    "`details` carries a `google.rpc.RetryInfo`.",
    500: "INTERNAL: an unexpected server error (details only in the server logs).",
    501: "UNIMPLEMENTED: the RPC is not available yet.",
    503: "UNAVAILABLE: the service is down or restarting; safe to retry with back-off.",
    504: "DEADLINE_EXCEEDED: the route's timeout (15 s, 120 s for paths and transforms) ran out.",
}


class OpenApiError(ValueError):
    """The descriptor set has something the document cannot describe."""


@dataclass
class _Index:
    """Messages and enums by full name, with their comments from source info."""

    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    comments: dict[tuple[str, tuple[int, ...]], str] = field(default_factory=dict)
    # full name -> (file name, source path) of messages, enums, services
    where: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)

    def comment(self, name: str, *suffix: int) -> str:
        file, path = self.where.get(name, ("", ()))
        return self.comments.get((file, path + suffix), "")


def _index(files: descriptor_pb2.FileDescriptorSet) -> _Index:
    index = _Index()
    for file in files.file:
        for location in file.source_code_info.location:
            text = location.leading_comments.strip() or location.trailing_comments.strip()
            if text:
                lines = [line.strip() for line in text.splitlines()]
                index.comments[(file.name, tuple(location.path))] = "\n".join(lines)

        def add(
            prefix: str,
            messages: Iterable[descriptor_pb2.DescriptorProto],
            path: tuple[int, ...],
            number: int,
            file_name: str = file.name,
        ) -> None:
            for i, message in enumerate(messages):
                name = f"{prefix}.{message.name}" if prefix else message.name
                here = (*path, number, i)
                index.messages[name] = message
                index.where[name] = (file_name, here)
                for j, enum in enumerate(message.enum_type):
                    index.enums[f"{name}.{enum.name}"] = enum
                    index.where[f"{name}.{enum.name}"] = (file_name, (*here, 4, j))
                add(name, message.nested_type, here, 3)

        add(file.package, file.message_type, (), 4)
        for j, enum in enumerate(file.enum_type):
            index.enums[f"{file.package}.{enum.name}"] = enum
            index.where[f"{file.package}.{enum.name}"] = (file.name, (5, j))
        for j, service in enumerate(file.service):
            index.where[f"{file.package}.{service.name}"] = (file.name, (6, j))
    return index


class _Builder:
    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.index = _index(files)
        self.files = files
        self.components: dict[str, JSON] = {}

    # -------------------------------------------------------------- schemas
    def ref(self, type_name: str) -> JSON:
        """A schema for a message or enum type: inline for well-known types, else a $ref."""
        name = type_name.lstrip(".")
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name not in self.components:
            if name in self.index.enums:
                self.components[name] = self.enum_schema(name)
            elif name in self.index.messages:
                self.components[name] = {}  # placed first: recursive messages refer to themselves
                self.components[name] = self.message_schema(name)
            else:
                raise OpenApiError(f"type {name} is not in the descriptor set")
        return {"$ref": f"#/components/schemas/{name}"}

    def enum_schema(self, name: str) -> JSON:
        enum = self.index.enums[name]
        values = [value.name for value in enum.value]
        lines = [self.index.comment(name)] if self.index.comment(name) else []
        for i, value in enumerate(enum.value):
            text = self.index.comment(name, 2, i)
            lines.append(f"- `{value.name}`" + (f": {_one_line(text)}" if text else ""))
        out: JSON = {"type": "string", "enum": values, "title": enum.name}
        if lines:
            out["description"] = "\n".join(lines)
        return out

    def field_schema(self, message: str, index: int, fd: FieldType) -> JSON:
        if fd.type == FieldType.TYPE_MESSAGE:
            entry = self.index.messages.get(fd.type_name.lstrip("."))
            if entry is not None and entry.options.map_entry:
                # JSON object keys are strings whatever the key type: only the value matters.
                out: JSON = {
                    "type": "object",
                    "additionalProperties": self.value_schema(entry.field[1]),
                }
            else:
                out = self.value_schema(fd)
                if fd.label == FieldType.LABEL_REPEATED:
                    out = {"type": "array", "items": out}
        else:
            out = self.value_schema(fd)
            if fd.label == FieldType.LABEL_REPEATED:
                out = {"type": "array", "items": out}
        text = self.index.comment(message, 2, index)
        if text:
            out = {"description": text, **out}
        return out

    def value_schema(self, fd: FieldType) -> JSON:
        if fd.type in (FieldType.TYPE_MESSAGE, FieldType.TYPE_ENUM):
            return self.ref(fd.type_name)
        if fd.type not in _SCALARS:
            raise OpenApiError(f"field {fd.name}: unsupported type {fd.type}")
        return dict(_SCALARS[fd.type])

    def message_schema(self, name: str, *, skip: frozenset[str] = frozenset()) -> JSON:
        message = self.index.messages[name]
        properties: JSON = {}
        for i, fd in enumerate(message.field):
            if fd.name not in skip:
                properties[fd.name] = self.field_schema(name, i, fd)
        out: JSON = {"type": "object", "title": message.name, "properties": properties}
        if not name.startswith("google."):
            # The gateway refuses unknown body keys (request_checks) and prints no others. Not
            # on google.rpc details: they are combined with `@type` through allOf.
            out["additionalProperties"] = False
        text = self.index.comment(name)
        groups = _oneofs(message)
        notes = []
        constraints = []
        for group, members in groups.items():
            members = [m for m in members if m not in skip]
            if len(members) < 2:
                continue
            notes.append(
                f"`{group}` is a oneof: at most one of "
                + ", ".join(f"`{member}`" for member in members)
                + " is set."
            )
            # At most one of the members: exactly one, or none of them.
            present = [{"required": [member]} for member in members]
            constraints.append({"oneOf": [*present, {"not": {"anyOf": present}}]})
        if len(constraints) == 1:
            out.update(constraints[0])
        elif constraints:
            out["allOf"] = constraints
        description = "\n\n".join(part for part in (text, *notes) if part)
        if description:
            out["description"] = description
        return out

    # -------------------------------------------------------------- operations
    def operations(self, services: Sequence[str]) -> tuple[JSON, list[JSON]]:
        paths: JSON = {}
        tags: list[JSON] = []
        wanted = set(services)
        for file in self.files.file:
            for service in file.service:
                full_service = f"{file.package}.{service.name}"
                if full_service not in wanted:
                    continue
                tag = service.name
                tag_entry: JSON = {"name": tag}
                if self.index.comment(full_service):
                    tag_entry["description"] = self.index.comment(full_service)
                tags.append(tag_entry)
                file_name, service_path = self.index.where[full_service]
                for m, method in enumerate(service.method):
                    if not method.options.HasExtension(annotations_pb2.http):
                        continue
                    rule = method.options.Extensions[annotations_pb2.http]
                    comment = self.index.comments.get((file_name, (*service_path, 2, m)), "")
                    bindings = list(schema._bindings(rule))
                    for n, (verb, template, body) in enumerate(bindings):
                        path, variables = _openapi_path(template)
                        operation = self.operation(
                            full_service,
                            method,
                            tag,
                            comment,
                            verb,
                            variables,
                            body,
                            operation_id=method.name + (f"_{n + 1}" if n else ""),
                        )
                        entry = paths.setdefault(path, {})
                        if verb.lower() in entry:
                            raise OpenApiError(f"two RPCs bind {verb} {template}")
                        entry[verb.lower()] = operation
        return dict(sorted(paths.items())), tags

    def operation(
        self,
        service: str,
        method: descriptor_pb2.MethodDescriptorProto,
        tag: str,
        comment: str,
        verb: str,
        variables: list[str],
        body: str,
        *,
        operation_id: str,
    ) -> JSON:
        rpc = f"{service}.{method.name}"
        request = method.input_type.lstrip(".")
        summary, _, rest = comment.partition("\n")
        op: JSON = {
            "tags": [tag],
            "operationId": operation_id,
            "summary": summary.strip() or method.name,
        }
        description = rest.strip()
        op["description"] = (description + "\n\n" if description else "") + f"gRPC: `{rpc}`."
        parameters: list[JSON] = []
        for variable in variables:
            parameters.append(
                {
                    "name": variable,
                    "in": "path",
                    "required": True,
                    "schema": self.path_field_schema(request, variable),
                    **self.field_description(request, variable),
                }
            )
        bound = {variable.split(".")[0] for variable in variables}
        body_field = "" if body in ("", "*") else body.split(".")[0]
        if body == "*":
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": self.body_schema(request, frozenset(bound)),
                    }
                },
            }
        elif body:
            fd = self.field(request, body)
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": self.value_schema(fd)}},
            }
        if body != "*":
            parameters.extend(
                self.query_parameters(request, "", frozenset(bound | {body_field}), set())
            )
        if parameters:
            op["parameters"] = parameters
        op["responses"] = self.responses(rpc, method, verb, bool(variables), bool(body))
        if rpc in PUBLIC_RPCS:
            op["security"] = []
        elif rpc in OPTIONAL_RPCS:
            # Anonymous, or signed in with an access token (`{}`: no credential at all).
            op["security"] = [{}, {"bearerAuth": []}]
        rule = PERMISSIONS.get(rpc)
        if rule is not None:
            # The role the services require (PERMISSION_DENIED below it), for people and tools.
            op["x-required-role"] = rule.describe()
        return op

    def body_schema(self, request: str, bound: frozenset[str]) -> JSON:
        if not bound:
            return self.ref(request)
        # The path variables are not part of the body (sending them too is a 400).
        return self.message_schema(request, skip=bound)

    def field(self, message: str, dotted: str) -> FieldType:
        current = message
        found: FieldType | None = None
        for part in dotted.split("."):
            entry = self.index.messages.get(current)
            if entry is None:
                raise OpenApiError(f"{dotted}: {current} is not a message")
            found = next((f for f in entry.field if f.name == part), None)
            if found is None:
                raise OpenApiError(f"{dotted} is not a field of {message}")
            current = found.type_name.lstrip(".")
        assert found is not None
        return found

    def field_description(self, message: str, dotted: str) -> JSON:
        *parents, last = dotted.split(".")
        current = message
        for part in parents:
            current = self.field(current, part).type_name.lstrip(".")
        entry = self.index.messages[current]
        for i, fd in enumerate(entry.field):
            if fd.name == last:
                text = self.index.comment(current, 2, i)
                return {"description": text} if text else {}
        return {}

    def path_field_schema(self, message: str, dotted: str) -> JSON:
        fd = self.field(message, dotted)
        if fd.label == FieldType.LABEL_REPEATED or fd.type == FieldType.TYPE_MESSAGE:
            raise OpenApiError(f"path variable {dotted} of {message} is not a scalar")
        return self.value_schema(fd)

    def query_parameters(
        self, message: str, prefix: str, skip: frozenset[str], seen: set[str]
    ) -> list[JSON]:
        """The fields the transcoder reads from the query string: scalars and enums (repeated
        ones repeat the parameter), non-repeated messages flattened to `a.b` names."""
        if message in seen:
            return []  # a recursive message: its fields were listed one level up
        entry = self.index.messages[message]
        out: list[JSON] = []
        for i, fd in enumerate(entry.field):
            if fd.name in skip:
                continue
            name = prefix + fd.name
            repeated = fd.label == FieldType.LABEL_REPEATED
            if fd.type == FieldType.TYPE_MESSAGE:
                type_name = fd.type_name.lstrip(".")
                target = self.index.messages.get(type_name)
                if repeated or (target is not None and target.options.map_entry):
                    continue  # repeated messages and maps cannot be passed in a query
                if type_name in _WELL_KNOWN:
                    value = dict(_WELL_KNOWN[type_name])
                else:
                    out.extend(
                        self.query_parameters(type_name, name + ".", frozenset(), seen | {message})
                    )
                    continue
            else:
                value = self.value_schema(fd)
            parameter: JSON = {"name": name, "in": "query", "required": False}
            if repeated:
                parameter["schema"] = {"type": "array", "items": value}
                parameter["style"] = "form"
                parameter["explode"] = True
            else:
                parameter["schema"] = value
            text = self.index.comment(message, 2, i)
            if text:
                parameter["description"] = text
            out.append(parameter)
        return out

    def responses(
        self,
        rpc: str,
        method: descriptor_pb2.MethodDescriptorProto,
        verb: str,
        has_path_variables: bool,
        has_body: bool,
    ) -> JSON:
        output = method.output_type.lstrip(".")
        out: JSON = {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": self.ref(output)}},
            }
        }
        # Every request: the gateway's own answers (408 slow client, 431 headers too large).
        codes = [400, 408, 429, 431, 500, 503, 504]
        if rpc not in PUBLIC_RPCS:
            codes += [401, 403]
        elif rpc in CREDENTIAL_RPCS:
            codes.append(401)
        if has_path_variables or rpc in NOT_FOUND_RPCS:
            codes.append(404)
        if rpc in CONFLICT_RPCS:
            codes.append(409)
        if has_body:
            codes += [413, 415]  # too large; not application/json (gateway/lua/request_checks.lua)
        for code in sorted(codes):
            out[str(code)] = {"$ref": f"#/components/responses/{_response_name(code)}"}
        del verb
        return out

    # -------------------------------------------------------------- errors
    def error_components(self) -> tuple[JSON, JSON]:
        status = self.ref("google.rpc.Status")
        del status
        details_items: JSON = {
            "anyOf": [
                *(
                    {
                        "allOf": [
                            self.ref(name),
                            {
                                "type": "object",
                                "properties": {"@type": {"const": f"type.googleapis.com/{name}"}},
                                "required": ["@type"],
                            },
                        ]
                    }
                    for name in ERROR_DETAILS
                ),
                _WELL_KNOWN["google.protobuf.Any"],
            ]
        }
        status_schema = self.components["google.rpc.Status"]
        status_schema["properties"]["details"]["items"] = details_items
        status_schema["required"] = ["code", "message"]
        responses: JSON = {}
        for code, text in _ERRORS.items():
            response: JSON = {
                "description": text,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/google.rpc.Status"}
                    }
                },
            }
            if code == 429:
                response["headers"] = {
                    "retry-after": {
                        "description": "Seconds to wait before retrying (at least 1).",
                        "schema": {"type": "integer", "minimum": 1},
                    }
                }
            if code == 401:
                response["headers"] = {
                    "www-authenticate": {
                        "description": "The scheme to authenticate with.",
                        "schema": {"type": "string"},
                    }
                }
            responses[_response_name(code)] = response
        security = {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token from `POST /v1/auth/login` or "
                "`POST /v1/auth/refresh`: `authorization: Bearer <access_token>`.",
            },
            "apiKeyAuth": {
                "type": "apiKey",
                "in": "header",
                "name": "x-api-key",
                "description": "An API key from `POST /v1/api-keys`.",
            },
        }
        return responses, security


def _response_name(code: int) -> str:
    return f"Error{code}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _oneofs(message: descriptor_pb2.DescriptorProto) -> dict[str, list[str]]:
    """Real oneofs (not proto3 `optional`'s synthetic ones) -> their member field names."""
    groups: dict[str, list[str]] = {}
    for fd in message.field:
        if fd.HasField("oneof_index") and not fd.proto3_optional:
            groups.setdefault(message.oneof_decl[fd.oneof_index].name, []).append(fd.name)
    return groups


def _openapi_path(template: str) -> tuple[str, list[str]]:
    """A google.api.http template as an OpenAPI path and its variables (field paths).

    `{id}` stays `{id}`; `{name=shelves/*}` (a variable spanning segments) becomes `{name}`, the
    closest OpenAPI can say; a `:verb` suffix stays literal."""
    schema._atoms(template)  # raises SchemaError on a malformed template
    out, variables = [], []
    i = 0
    while i < len(template):
        if template[i] == "{":
            end = template.index("}", i)
            name = template[i + 1 : end].partition("=")[0]
            variables.append(name)
            out.append("{" + name + "}")
            i = end + 1
        else:
            out.append(template[i])
            i += 1
    return "".join(out), variables


def build(files: descriptor_pb2.FileDescriptorSet, services: Sequence[str]) -> JSON:
    """The OpenAPI 3.1 document (a JSON-able dict) of `services`' REST bindings in `files`."""
    builder = _Builder(files)
    paths, tags = builder.operations(services)
    responses, security = builder.error_components()
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Catalytic Lattice Platform API",
            "version": API_VERSION,
            "description": (
                "REST/JSON through the gateway, transcoded to the gRPC services. JSON uses the "
                "proto field names; 64-bit integers are strings; enums are their value names; "
                "bytes are base64. Every error is a `google.rpc.Status` body with the HTTP "
                "status of its gRPC code. Generated from the protos by `make openapi`."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": tags,
        "security": [{"bearerAuth": []}, {"apiKeyAuth": []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(builder.components.items())),
            "responses": responses,
            "securitySchemes": security,
        },
    }


def dumps(document: JSON) -> str:
    """The committed text form: stable key order, two-space indent, final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def generate(descriptor: Path = DEFAULT_DESCRIPTOR) -> str:
    try:
        files = schema.load(descriptor)
    except (OSError, DecodeError) as exc:
        raise OpenApiError(f"descriptor set {descriptor}: {exc} (run `make protos`)") from None
    try:
        return dumps(build(files, TRANSCODED_SERVICES))
    except schema.SchemaError as exc:
        raise OpenApiError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.openapi",
        description="Write the OpenAPI 3.1 document of the REST API, from the descriptor set.",
    )
    parser.add_argument("--out", type=Path, help="write here instead of standard output")
    parser.add_argument("--descriptor", type=Path, default=DEFAULT_DESCRIPTOR)
    args = parser.parse_args(argv)
    try:
        text = generate(args.descriptor)
    except OpenApiError as exc:
        print(f"gateway.openapi: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
