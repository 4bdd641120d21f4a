"""OpenAPI schemas as Markdown: type names, field tables and the type entries of an API page.

Named types (messages and enums in `components/schemas`) are written by short name
(`Lattice`, `FindPathRequest.Algorithm`) and linked to their entry in the same page's
generated `types` block, whose headings give the anchors (GitHub's heading slugs).
"""

from __future__ import annotations

import re
from typing import Any

JSON = dict[str, Any]


def short_name(full: str) -> str:
    """`catalytic.lattice.v1.FindPathRequest.Algorithm` -> `FindPathRequest.Algorithm`."""
    parts = full.split(".")
    for i, part in enumerate(parts):
        if part[:1].isupper():
            return ".".join(parts[i:])
    return full


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def cell(text: str) -> str:
    """Text fit for one table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def ref_name(schema: JSON) -> str | None:
    ref = schema.get("$ref")
    return None if ref is None else str(ref).rsplit("/", 1)[-1]


class SchemaText:
    """Markdown for the schemas of one OpenAPI document."""

    def __init__(self, document: JSON) -> None:
        self.schemas: JSON = document["components"]["schemas"]

    def is_enum(self, name: str) -> bool:
        return "enum" in self.schemas[name]

    def resolve(self, schema: JSON) -> JSON:
        name = ref_name(schema)
        return schema if name is None else dict(self.schemas[name])

    def type_text(self, schema: JSON) -> str:
        """The type column: `string`, `int64 (a JSON string)`, a link to a named type, ..."""
        name = ref_name(schema)
        if name is not None:
            short = short_name(name)
            link = f"[`{short}`](#{slug(short)})"
            return f"enum {link}" if self.is_enum(name) else link
        kind = schema.get("type")
        fmt = schema.get("format")
        if kind == "array":
            return "list of " + self.type_text(schema.get("items", {}))
        if kind == "object":
            values = schema.get("additionalProperties")
            if isinstance(values, dict):
                return "map of string to " + self.type_text(values)
            return "object"
        if isinstance(kind, list):
            base = self.type_text({**schema, "type": next(k for k in kind if k != "null")})
            return f"{base} or null"
        if kind == "string":
            if fmt in ("int64", "uint64"):
                return f"{fmt} (a JSON string)"
            if fmt == "byte":
                return "bytes (base64)"
            if fmt == "date-time":
                return "timestamp (RFC 3339)"
            if "pattern" in schema and str(schema["pattern"]).endswith("s$"):
                return 'duration (`"1.5s"`)'
            return "string"
        if kind == "integer":
            return str(fmt or "integer")
        if kind == "number":
            return str(fmt or "number")
        if kind == "boolean":
            return "bool"
        return "any JSON value"

    def field_table(self, schema: JSON) -> list[str]:
        """A message's fields as a table, then a line per oneof; [] for a message without."""
        message = self.resolve(schema)
        properties: JSON = message.get("properties", {})
        if not properties:
            return []
        lines = ["| field | type | description |", "|---|---|---|"]
        for name, field in properties.items():
            description = cell(str(field.get("description", "")))
            lines.append(f"| `{name}` | {self.type_text(field)} | {description} |")
        for members in oneof_groups(message):
            lines += ["", "At most one of " + ", ".join(f"`{m}`" for m in members) + " is set."]
        return lines

    def referenced(self, schema: JSON, seen: set[str]) -> None:
        """Adds to `seen` every named type reachable from `schema` (google.* left out)."""
        name = ref_name(schema)
        if name is not None:
            if name in seen or name.startswith("google."):
                return
            seen.add(name)
            schema = self.schemas[name]
        for field in schema.get("properties", {}).values():
            self.referenced(field, seen)
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                self.referenced(schema[key], seen)

    def type_entry(self, name: str) -> list[str]:
        """A `### Name` heading, the type's description, and its field table."""
        schema = self.schemas[name]
        lines = [f"### `{short_name(name)}`", ""]
        description = str(schema.get("description", "")).strip()
        if self.is_enum(name):
            # The enum's comment, then one `- VALUE: comment` line per value.
            lines += [description or ", ".join(f"`{v}`" for v in schema["enum"]), ""]
            return lines
        # A oneof note is in the description and again under the table: keep the table's.
        kept = [p for p in description.split("\n\n") if " is a oneof: " not in p]
        if kept:
            lines += ["\n\n".join(kept), ""]
        table = self.field_table({"$ref": f"#/components/schemas/{name}"})
        lines += [*table, ""] if table else ["No fields: `{}`.", ""]
        return lines


def oneof_groups(message: JSON) -> list[list[str]]:
    """The members of each oneof, from the `oneOf` constraints gateway/openapi.py writes."""
    constraints = [message] if "oneOf" in message else []
    constraints += [part for part in message.get("allOf", []) if "oneOf" in part]
    return [
        [branch["required"][0] for branch in part["oneOf"] if "required" in branch]
        for part in constraints
    ]
