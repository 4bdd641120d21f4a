"""gateway/apidocs.py and its parts: the generated reference in the API guides."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway import apidocs, curl, mdblocks, openapi, statuses
from gateway.examples import Examples
from gateway.mdschema import slug
from gateway.render import DEFAULT_DESCRIPTOR
from services.common.status import STATUS_CODES


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(openapi.generate(DEFAULT_DESCRIPTOR))
    return loaded


def operation(doc: dict[str, Any], verb: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = doc["paths"][path][verb]
    return found


# ---------------------------------------------------------------- blocks
def test_fill_replaces_only_what_is_between_the_markers() -> None:
    text = "# T\n\nintro\n<!-- BEGIN GENERATED: a -->\nold\n<!-- END GENERATED: a -->\nafter\n"
    out = mdblocks.fill(text, {"a": "new\nlines"})
    assert out == (
        "# T\n\nintro\n<!-- BEGIN GENERATED: a -->\nnew\nlines\n<!-- END GENERATED: a -->\nafter\n"
    )
    assert mdblocks.fill(out, {"a": "new\nlines"}) == out


@pytest.mark.parametrize(
    ("text", "contents", "message"),
    [
        ("<!-- BEGIN GENERATED: a -->\n", {"a": ""}, "no END"),
        ("<!-- END GENERATED: a -->\n", {"a": ""}, "without its BEGIN"),
        (
            "<!-- BEGIN GENERATED: a -->\n<!-- END GENERATED: a -->\n" * 2,
            {"a": ""},
            "named twice",
        ),
        ("<!-- BEGIN GENERATED: a -->\n<!-- END GENERATED: a -->\n", {}, "no generated contents"),
        ("no blocks\n", {"GET /x": ""}, "no block for GET /x"),
    ],
)
def test_fill_refuses_markers_and_contents_that_do_not_match(
    text: str, contents: dict[str, str], message: str
) -> None:
    with pytest.raises(mdblocks.BlockError, match=message):
        mdblocks.fill(text, contents)


def test_headings_above_skips_code_fences() -> None:
    text = "## Real\n\n```bash\n# not a heading\n```\n<!-- BEGIN GENERATED: a -->\n"
    text += "<!-- END GENERATED: a -->\n"
    assert mdblocks.headings_above(text) == {"a": "Real"}


def test_slugs_are_githubs() -> None:
    assert (
        slug("`POST /v1/auth/register` — create a tenant") == "post-v1authregister--create-a-tenant"
    )
    assert slug("`FindPathRequest.Algorithm`") == "findpathrequestalgorithm"


# ---------------------------------------------------------------- examples and curl
def test_body_examples_take_one_member_of_each_oneof(doc: dict[str, Any]) -> None:
    examples = Examples(doc)
    create = operation(doc, "post", "/v1/lattices")
    body = examples.body(create["requestBody"]["content"]["application/json"]["schema"])
    assert body == {"name": "demo", "dimensions": 2, "size": 10, "constant": {"value": 1}}
    transform = operation(doc, "post", "/v1/lattices/{id}/transform")
    body = examples.body(transform["requestBody"]["content"]["application/json"]["schema"])
    assert body == {"xor": {"key": 305419896}}  # if_version left out


def test_curl_for_a_public_body_route_runs_in_a_shell(doc: dict[str, Any]) -> None:
    command = curl.command(
        Examples(doc), "post", "/v1/auth/refresh", operation(doc, "post", "/v1/auth/refresh")
    )
    assert "authorization" not in command
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:3] == ["curl", "-s", "http://127.0.0.1:8080/v1/auth/refresh"]
    # The shell variable is outside the single quotes, so the shell expands it.
    assert words[-1] == '{"refresh_token": "$REFRESH_TOKEN"}'
    assert "'\"$REFRESH_TOKEN\"'" in command


def test_curl_for_a_query_route_repeats_list_parameters(doc: dict[str, Any]) -> None:
    path = "/v1/lattices/{id}/path"
    command = curl.command(Examples(doc), "get", path, operation(doc, "get", path))
    url = shlex.split(command.replace("\\\n", " "))[2]
    assert url == (
        "http://127.0.0.1:8080/v1/lattices/$ID/path"
        "?start=0&start=0&end=9&end=9&algorithm=AUTO&cost=UNIT"
    )
    assert '-H "authorization: Bearer $TOKEN"' in command


def test_curl_for_a_post_without_body_names_the_method(doc: dict[str, Any]) -> None:
    path = "/v1/webhooks/{id}/deliveries/{delivery_id}/resend"
    command = curl.command(Examples(doc), "post", path, operation(doc, "post", path))
    assert command.startswith(
        'curl -s -X POST "http://127.0.0.1:8080/v1/webhooks/$ID/deliveries/$DELIVERY_ID/resend"'
    )
    assert "-d " not in command


# ---------------------------------------------------------------- the guides
def test_every_route_has_a_block_with_a_curl_example(doc: dict[str, Any]) -> None:
    pages = apidocs.updated(apidocs.DOCS_DIR, doc)
    for path, item in doc["paths"].items():
        for verb, op in item.items():
            page = apidocs.DOCS_DIR / apidocs.PAGES[op["tags"][0]]
            text = pages[page]
            route = f"{verb.upper()} {path}"
            start = text.index(mdblocks.begin(route))
            block = text[start : text.index(mdblocks.end(route))]
            assert "```bash\ncurl -s" in block, route


def test_type_links_resolve_to_headings_on_the_same_page(doc: dict[str, Any]) -> None:
    for path, text in apidocs.updated(apidocs.DOCS_DIR, doc).items():
        headings = {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
        for anchor in re.findall(r"\]\(#([^)]+)\)", text):
            assert anchor in headings, (path.name, anchor)


def test_a_missing_route_block_is_an_error_naming_it(doc: dict[str, Any], tmp_path: Path) -> None:
    for page in (apidocs.ERRORS_PAGE, *apidocs.PAGES.values()):
        shutil.copy(apidocs.DOCS_DIR / page, tmp_path / page)
    guide = tmp_path / "saas-api.md"
    text = guide.read_text()
    route = "GET /v1/users/me"
    start, stop = text.index(mdblocks.begin(route)), text.index(mdblocks.end(route))
    guide.write_text(text[:start] + text[stop + len(mdblocks.end(route)) :])
    with pytest.raises(apidocs.ApiDocsError, match=re.escape(f"no block for {route}")):
        apidocs.updated(tmp_path, doc)
    assert apidocs.main(["--docs", str(tmp_path)]) == 2


def test_check_reports_a_stale_guide(tmp_path: Path) -> None:
    for page in (apidocs.ERRORS_PAGE, *apidocs.PAGES.values()):
        shutil.copy(apidocs.DOCS_DIR / page, tmp_path / page)
    assert apidocs.main(["--docs", str(tmp_path), "--check"]) == 0
    guide = tmp_path / "errors.md"
    guide.write_text(guide.read_text().replace("| 404 |", "| 418 |"))
    assert apidocs.main(["--docs", str(tmp_path), "--check"]) == 1
    assert apidocs.main(["--docs", str(tmp_path)]) == 0
    assert apidocs.main(["--docs", str(tmp_path), "--check"]) == 0


# ---------------------------------------------------------------- the status table
def test_status_table_covers_every_code_the_services_send() -> None:
    codes = {row.code for row in statuses.rows()}
    assert codes == set(STATUS_CODES.values()) | {grpc.StatusCode.INTERNAL}
    for row in statuses.rows():
        assert row.http_status == statuses.ENVOY_HTTP_STATUS[row.code]


def test_status_table_matches_the_contract() -> None:
    """ARCHITECTURE.md §3: the HTTP status of each gRPC code."""
    table = {row.code.name: row.http_status for row in statuses.rows()}
    assert table == {
        **table,
        "INVALID_ARGUMENT": 400,
        "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "FAILED_PRECONDITION": 400,
        "RESOURCE_EXHAUSTED": 429,
        "UNAVAILABLE": 503,
        "INTERNAL": 500,
    }


def test_openapi_error_responses_agree_with_the_status_table(doc: dict[str, Any]) -> None:
    """The OpenAPI document describes each HTTP error status by the gRPC codes that give it."""
    responses = doc["components"]["responses"]
    for row in statuses.rows():
        if row.code == grpc.StatusCode.UNKNOWN:
            continue  # a bug by definition: the 500 response names INTERNAL only
        described = responses[f"Error{row.http_status}"]["description"]
        assert described.startswith(row.code.name) or f"or {row.code.name}" in described, row
