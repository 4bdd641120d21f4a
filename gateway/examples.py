"""Example values for the API documents' curl examples, built from the OpenAPI schemas.

A field gets the value named for it in `FIELD_EXAMPLES` (values a service accepts, so the
examples run as written) under `Message.field` or else under its name alone, else one made
from its type. A oneof contributes only its first
member; a field whose example is `None` (continuation tokens, optional concurrency checks) is
left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.mdschema import oneof_groups

JSON = dict[str, Any]

# `$NAME` values are shell variables the reader sets from earlier answers.
FIELD_EXAMPLES: Mapping[str, object] = {
    "email": "ada@example.com",
    "password": "correct horse battery staple",
    "tenant_name": "Ada Labs",
    "refresh_token": "$REFRESH_TOKEN",
    "name": "demo",
    "dimensions": 2,
    "size": 10,
    "value": 1,
    "key": 305419896,
    "start": [0, 0],
    "end": [9, 9],
    "offset": "0",
    "limit": 4,
    "page_size": 20,
    "page_token": None,
    "if_version": None,
    "url": "https://hooks.example.com/catalytic",
    "event_types": ["lattice.created"],
    "description": "billing",
    "ordered": False,
    "role": "member",
    "token": "$INVITATION_TOKEN",
    "invited_by": None,
    # Log-in's default tenant needs none; switching names the other tenant.
    "LoginRequest.tenant_id": None,
    "SwitchTenantRequest.tenant_id": "$TENANT_ID",
    "CreateInvitationRequest.email": "grace@example.com",
    # The audit trail's filters (query parameters: by name alone): what every tenant has.
    "start_time": "2026-01-01T00:00:00Z",
    "end_time": None,
    "action": "auth.login",
    "actor_id": None,
}
_BY_TYPE: Mapping[str, object] = {
    "string": "example",
    "integer": 1,
    "number": 1.0,
    "boolean": False,
}
_MAX_DEPTH = 4  # recursive messages stop here


class Examples:
    """Example values for the schemas of one OpenAPI document."""

    def __init__(self, document: JSON) -> None:
        self.schemas: JSON = document["components"]["schemas"]

    def resolve(self, schema: JSON) -> JSON:
        ref = schema.get("$ref")
        if ref is None:
            return schema
        resolved: JSON = self.schemas[ref.rsplit("/", 1)[-1]]
        return resolved

    def body(self, schema: JSON) -> JSON:
        """An example request body (a JSON object) for a message schema."""
        value = self.value(schema, "", 0)
        return value if isinstance(value, dict) else {}

    def parameter(self, name: str, schema: JSON) -> object | None:
        """An example for a path or query parameter; None: leave it out."""
        return self.value(schema, name.rsplit(".", 1)[-1], 0)

    def value(self, schema: JSON, name: str, depth: int, owner: str = "") -> object | None:
        schema = self.resolve(schema)
        for key in (f"{owner}.{name}", name):
            if key in FIELD_EXAMPLES and _fits(FIELD_EXAMPLES[key], schema):
                return FIELD_EXAMPLES[key]
        if "enum" in schema:
            names = [str(v) for v in schema["enum"]]
            return next((v for v in names if not v.endswith("UNSPECIFIED")), names[0])
        kind = schema.get("type")
        if kind == "object" and "properties" in schema:
            return self.message(schema, depth) if depth < _MAX_DEPTH else {}
        if kind == "array":
            item = self.value(schema.get("items", {}), "", depth + 1)
            return [] if item is None else [item]
        if kind == "object":
            return {}
        if isinstance(kind, list):  # wrappers: ["string", "null"]
            kind = next((k for k in kind if k != "null"), "string")
        if schema.get("format") in ("int64", "uint64"):
            return "1"
        if schema.get("format") == "byte":
            return "AAAAAA=="
        if schema.get("format") == "date-time":
            return "2026-01-01T00:00:00Z"
        return _BY_TYPE.get(str(kind), "example")

    def message(self, schema: JSON, depth: int) -> JSON:
        skipped = {member for group in oneof_groups(schema) for member in group[1:]}
        owner = str(schema.get("title", ""))
        out: JSON = {}
        for name, field_schema in schema["properties"].items():
            if name in skipped:
                continue
            value = self.value(field_schema, name, depth + 1, owner)
            if value is not None:
                out[name] = value
        return out


def _fits(example: object, schema: JSON) -> bool:
    """Whether a named example has the JSON type of the field it would fill (None always does:
    it leaves the field out)."""
    kind = schema.get("type")
    if example is None:
        return True
    if isinstance(example, bool):
        return kind == "boolean"
    if isinstance(example, int | float):
        return kind in ("integer", "number")
    if isinstance(example, str):
        return kind == "string"
    if isinstance(example, list):
        return kind == "array"
    return False
