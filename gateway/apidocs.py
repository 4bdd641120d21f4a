"""The generated parts of the API guides in docs/api/, from the OpenAPI document of the protos.

`python -m gateway.apidocs` (`make openapi`, after docs/api/openapi.json) rewrites the generated
blocks (gateway/mdblocks.py) of the Markdown guides and leaves the narrative around them alone:

- in each service's page (`PAGES`), a block per route, named `VERB /path`: the proto comment,
  credential, parameters, request body and response fields, the error statuses and a curl
  example; a `routes` block (an index of the page's routes) and a `types` block (every message
  and enum those fields use, which the route blocks link to);
- in errors.md, the `status table` block: the gRPC → HTTP status table (gateway/statuses.py).

The document is built from the descriptor set exactly as gateway/openapi.py writes
docs/api/openapi.json, so the guides and the document cannot disagree.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway import curl, mdblocks, openapi, statuses
from gateway.examples import Examples
from gateway.mdschema import SchemaText, cell, ref_name, short_name, slug
from gateway.render import DEFAULT_DESCRIPTOR, REPO_ROOT

JSON = dict[str, Any]

DOCS_DIR = REPO_ROOT / "docs" / "api"
# The page that documents each service (OpenAPI tag) of the document.
PAGES: Mapping[str, str] = {
    "AuthService": "saas-api.md",
    "LatticeService": "catalytic-api.md",
    "WebhookService": "webhook-system.md",
}
ERRORS_PAGE = "errors.md"
_VERBS = ("get", "post", "delete", "put", "patch")
_GRPC_LINE = re.compile(r"\n*gRPC: `([^`]+)`\.$")


class ApiDocsError(ValueError):
    """The guides cannot be brought in line with the document."""


def _operations(document: JSON) -> list[tuple[str, str, JSON]]:
    """(verb, path, operation) in the document's path order."""
    return [
        (verb, path, item[verb])
        for path, item in document["paths"].items()
        for verb in _VERBS
        if verb in item
    ]


def _prose(operation: JSON) -> tuple[str, str]:
    """The RPC's proto comment, as one Markdown text, and the gRPC method's full name."""
    description = str(operation.get("description", ""))
    match = _GRPC_LINE.search(description)
    if match is None:
        raise ApiDocsError(f"{operation['operationId']}: no gRPC method in its description")
    rest = description[: match.start()].strip()
    text = str(operation["summary"]) + ("\n" + rest if rest else "")
    return text, match.group(1)


def _first_sentence(text: str) -> str:
    flat = " ".join(text.split())
    end = flat.find(". ")
    return flat if end < 0 else flat[: end + 1]


def _credential(operation: JSON) -> str:
    if operation.get("security") == []:
        return "none (public)"
    if {} in operation.get("security", []):
        return "none, or `authorization: Bearer <access token>` (see below)"
    role = str(operation.get("x-required-role", ""))
    if "no API keys" in role:
        return f"`authorization: Bearer <access token>`; role {role.split(',')[0]}"
    return (
        "`authorization: Bearer <access token>` or `x-api-key: <API key>`; "
        f"role {role} (an API key: its own role or its creator's, whichever is lower)"
    )


def _credential_cell(operation: JSON) -> str:
    """The routes index's short form of the credential."""
    if operation.get("security") == []:
        return "none"
    if {} in operation.get("security", []):
        return "none, or token"
    role = str(operation.get("x-required-role", ""))
    kinds = "token" if "no API keys" in role else "token or API key"
    return f"{kinds}; {role.split(',')[0]}"


def route_block(
    schemas: SchemaText, examples: Examples, types: set[str], verb: str, path: str, op: JSON
) -> str:
    """One route; a request or response message that is also in the page's `types` is linked
    to its entry there rather than tabled twice."""
    text, rpc = _prose(op)
    lines = [text, "", f"Credential: {_credential(op)}. gRPC: `{rpc}`.", ""]
    for where, title in (("path", "Path parameters"), ("query", "Query parameters")):
        parameters = [p for p in op.get("parameters", []) if p["in"] == where]
        if parameters:
            lines += [f"{title}:", "", "| name | type | description |", "|---|---|---|"]
            for p in parameters:
                # A query or path value is plain text, whatever its JSON form in a body.
                kind = schemas.type_text(p["schema"]).replace(" (a JSON string)", "")
                if p.get("explode") and p["schema"].get("type") == "array":
                    kind += ", one parameter per item"
                lines.append(f"| `{p['name']}` | {kind} | {cell(str(p.get('description', '')))} |")
            lines.append("")
    if "requestBody" in op:
        body = op["requestBody"]["content"]["application/json"]["schema"]
        lines += _message_section(schemas, types, "Request body", body)
    response = op["responses"]["200"]["content"]["application/json"]["schema"]
    lines += _message_section(schemas, types, "Response", response)
    errors = sorted(code for code in op["responses"] if code != "200")
    lines += [
        "Error statuses: "
        + ", ".join(errors)
        + f" (a `google.rpc.Status` body; [what each means]({ERRORS_PAGE})).",
        "",
        "```bash",
        curl.command(examples, verb, path, op),
        "```",
    ]
    return "\n".join(lines)


def _additional_binding(examples: Examples, first: str, verb: str, path: str, op: JSON) -> str:
    """A second route to an RPC documented already: the same call, said once."""
    return "\n".join(
        [
            f"The same call as `{first}` (another binding of `{_prose(op)[1]}`): the same "
            "credential, fields and error statuses.",
            "",
            "```bash",
            curl.command(examples, verb, path, op),
            "```",
        ]
    )


def _message_section(schemas: SchemaText, types: set[str], title: str, schema: JSON) -> list[str]:
    if ref_name(schema) in types:
        return [f"{title}: {schemas.type_text(schema)}.", ""]
    message = schemas.resolve(schema)
    name = str(message.get("title", ""))
    table = schemas.field_table(schema)
    if not table:
        return [f"{title}: `{{}}` (`{name}`, no fields).", ""]
    return [f"{title} (`{name}`):", "", *table, ""]


def routes_block(document: JSON, tag: str, headings: Mapping[str, str]) -> str:
    """An index of the page's routes, in the order of their blocks on the page, each linked to
    the heading its block sits under (`headings`: block name -> heading)."""
    rows = []
    for verb, path, op in _operations(document):
        if tag in op["tags"]:
            route = f"{verb.upper()} {path}"
            text, _ = _prose(op)
            public = _credential_cell(op)
            name = f"[`{route}`](#{slug(headings[route])})" if route in headings else f"`{route}`"
            rows.append((route, f"| {name} | {cell(_first_sentence(text))} | {public} |"))
    order = list(headings)
    rows.sort(key=lambda row: order.index(row[0]) if row[0] in order else len(order))
    return "\n".join(["| route | does | credential |", "|---|---|---|", *(r for _, r in rows)])


def page_types(schemas: SchemaText, document: JSON, tag: str) -> set[str]:
    """Every named type the page's parameters and request and response fields use."""
    seen: set[str] = set()
    for _, _, op in _operations(document):
        if tag not in op["tags"]:
            continue
        tops = [op["responses"]["200"]["content"]["application/json"]["schema"]]
        if "requestBody" in op:
            tops.append(op["requestBody"]["content"]["application/json"]["schema"])
        for parameter in op.get("parameters", []):
            schemas.referenced(parameter["schema"], seen)
        for top in tops:
            for field in schemas.resolve(top).get("properties", {}).values():
                schemas.referenced(field, seen)
    return seen


def types_block(schemas: SchemaText, types: set[str]) -> str:
    lines: list[str] = []
    for name in sorted(types, key=short_name):
        lines += schemas.type_entry(name)
    return "\n".join(lines).rstrip("\n")


def status_table_block() -> str:
    lines = [
        "| gRPC code | HTTP | raised by (`services/common/errors.py`) | meaning |",
        "|---|---|---|---|",
    ]
    for row in statuses.rows():
        raised = ", ".join(f"`{name}`" for name in row.domain_errors) or "any other exception"
        lines.append(
            f"| {row.number} `{row.code.name}` | {row.http_status} | {raised} | "
            f"{cell(row.meaning[:1].upper() + row.meaning[1:])}. |"
        )
    return "\n".join(lines)


def contents(
    document: JSON, headings: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """Page file name -> block name -> the block's generated text. `headings`: for each page,
    block name -> the heading it sits under (the route index links to them)."""
    schemas, examples = SchemaText(document), Examples(document)
    pages: dict[str, dict[str, str]] = {ERRORS_PAGE: {"status table": status_table_block()}}
    for tag in (entry["name"] for entry in document["tags"]):
        if tag not in PAGES:
            raise ApiDocsError(f"service {tag} has no page: add it to PAGES in gateway/apidocs.py")
        blocks = pages.setdefault(PAGES[tag], {})
        types = page_types(schemas, document, tag)
        blocks["routes"] = routes_block(document, tag, headings.get(PAGES[tag], {}))
        blocks["types"] = types_block(schemas, types)
        operations = [(v, p, op) for v, p, op in _operations(document) if tag in op["tags"]]
        # An RPC's main binding has its method name as operationId; others add `_2`, `_3`...
        main_route = {
            _prose(op)[1]: f"{verb.upper()} {path}"
            for verb, path, op in operations
            if "_" not in op["operationId"]
        }
        for verb, path, op in operations:
            route, main = f"{verb.upper()} {path}", main_route[_prose(op)[1]]
            if route == main:
                block = route_block(schemas, examples, types, verb, path, op)
            else:
                block = _additional_binding(examples, main, verb, path, op)
            blocks[route] = block
    return pages


def updated(docs_dir: Path, document: JSON) -> dict[Path, str]:
    """Each page's text with its blocks regenerated (whether or not it changed)."""
    texts = {page: (docs_dir / page).read_text() for page in (ERRORS_PAGE, *PAGES.values())}
    page = ""
    try:
        headings = {}
        for page, text in texts.items():
            headings[page] = mdblocks.headings_above(text)
        out = {}
        for page, blocks in contents(document, headings).items():
            out[docs_dir / page] = mdblocks.fill(texts[page], blocks)
    except mdblocks.BlockError as exc:
        raise ApiDocsError(f"{docs_dir / page}: {exc}") from None
    for path, new in out.items():
        _check_anchors(path, new)
    return out


def _check_anchors(path: Path, text: str) -> None:
    """Two headings with one slug would make a type link point at the wrong one."""
    headings, fenced = [], False
    for line in text.splitlines():
        fenced ^= line.startswith("```")
        if line.startswith("#") and not fenced:
            headings.append(line.lstrip("#").strip())
    slugs = [slug(heading) for heading in headings]
    twice = sorted({s for s in slugs if slugs.count(s) > 1})
    if twice:
        raise ApiDocsError(f"{path}: headings with the same anchor: {', '.join(twice)}")


def document_from(descriptor: Path) -> JSON:
    loaded: JSON = json.loads(openapi.generate(descriptor))
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.apidocs",
        description="Regenerate the generated blocks of the API guides in docs/api/.",
    )
    parser.add_argument("--descriptor", type=Path, default=DEFAULT_DESCRIPTOR)
    parser.add_argument("--docs", type=Path, default=DOCS_DIR, help="the guides' directory")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when a guide is stale"
    )
    args = parser.parse_args(argv)
    try:
        pages = updated(args.docs, document_from(args.descriptor))
    except (openapi.OpenApiError, ApiDocsError, statuses.StatusTableError, OSError) as exc:
        print(f"gateway.apidocs: {exc}", file=sys.stderr)
        return 2
    stale = [path for path, text in pages.items() if path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"gateway.apidocs: {path} is stale: run `make openapi`", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(pages[path])
    return 0


if __name__ == "__main__":
    sys.exit(main())
