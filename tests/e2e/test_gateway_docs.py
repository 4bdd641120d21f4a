"""The API documents through the gateway: /openapi.json, Swagger UI at /docs, ReDoc at /redoc."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import httpx
import pytest

from devstack import Stack
from gateway.render import DEFAULT_OPENAPI
from tests.e2e.browser import BrowserError, Page, chromium
from tests.e2e.helpers import Tenant

pytestmark = pytest.mark.e2e


def test_openapi_json_is_the_committed_document(gateway: httpx.Client) -> None:
    reply = gateway.get("/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.content == DEFAULT_OPENAPI.read_bytes()
    assert reply.json()["openapi"].startswith("3.1")


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", ["/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"]),
        ("/redoc", ["/redoc/redoc.standalone.js"]),
    ],
)
def test_docs_pages_and_their_assets_are_served(
    gateway: httpx.Client, page: str, assets: list[str]
) -> None:
    reply = gateway.get(page)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in reply.text
    for asset in assets:
        assert asset in reply.text
        served = gateway.get(asset)
        assert served.status_code == 200, asset
        kind = "text/css" if asset.endswith(".css") else "text/javascript"
        assert served.headers["content-type"].startswith(kind)
        assert len(served.content) > 100_000  # the real bundle, not an error page


def test_every_documented_route_answers_through_the_gateway(gateway: httpx.Client) -> None:
    """Without a credential each route answers as documented (public ones are not 404/401)."""
    document = gateway.get("/openapi.json").json()
    for path, item in document["paths"].items():
        concrete = path.replace("{id}", "00000000-0000-0000-0000-000000000000").replace(
            "{delivery_id}", "00000000-0000-0000-0000-000000000000"
        )
        for verb, operation in item.items():
            reply = gateway.request(verb.upper(), concrete, json={} if verb == "post" else None)
            assert str(reply.status_code) in operation["responses"], (verb, path, reply.text)
            assert reply.status_code < 500, (verb, path, reply.text)


def rendered_dom(url: str) -> str:
    """The page's DOM after its scripts ran, from headless Chromium (Debian `chromium`)."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium is not installed (run `make system-deps`)", pytrace=False)
    with tempfile.TemporaryDirectory(prefix="catalytic-test-chromium-") as profile:
        result = subprocess.run(
            [
                browser,
                f"--user-data-dir={profile}",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-proxy-server",
                "--virtual-time-budget=15000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        )
    assert result.stdout, (url, result.stderr[-300:])
    return result.stdout


def test_swagger_ui_renders_every_tag_in_a_browser(gateway: httpx.Client, stack: Stack) -> None:
    tags = [tag["name"] for tag in gateway.get("/openapi.json").json()["tags"]]
    dom = rendered_dom(f"{stack.gateway_url}/docs")
    for tag in tags:
        assert f'data-tag="{tag}"' in dom, tag


def test_redoc_renders_every_tag_in_a_browser(gateway: httpx.Client, stack: Stack) -> None:
    document = gateway.get("/openapi.json").json()
    dom = rendered_dom(f"{stack.gateway_url}/redoc")
    for tag in document["tags"]:
        assert tag["name"] in dom, tag["name"]
    assert document["info"]["title"] in dom


@pytest.fixture(scope="module")
def swagger_page(stack: Stack) -> Iterator[Page]:
    """One headless Chromium tab for the Swagger UI tests of this module."""
    try:
        with chromium(timeout=30) as browser:
            yield browser.new_page()
    except BrowserError as exc:
        pytest.fail(str(exc), pytrace=False)


def open_operation(page: Page, docs_url: str, tag: str, operation_id: str) -> str:
    """Loads Swagger UI afresh at the operation (its deep link expands it) and clicks "Try it
    out"; the operation block's CSS selector."""
    block = f"#operations-{tag}-{operation_id}"
    page.navigate("about:blank")  # a new document, not a jump within the current one
    page.navigate(f"{docs_url}#/{tag}/{operation_id}")
    page.wait_for(
        f"document.querySelector('{block} .try-out__btn') !== null",
        timeout=60,
        what=f"Swagger UI to render {operation_id}",
    )
    page.evaluate(f"document.querySelector('{block} .try-out__btn').click()")
    page.wait_for(
        f"document.querySelector('{block} button.execute') !== null",
        timeout=10,
        what="the Execute button",
    )
    return block


def execute(page: Page, block: str, *, unlike: str = "") -> tuple[str, str]:
    """Clicks "Execute" and returns the live response's status and body as the page shows
    them, once the status is there (and differs from `unlike`, an earlier one)."""
    page.evaluate(f"document.querySelector('{block} button.execute').click()")
    live = f"{block} .live-responses-table tbody"
    status = page.wait_for(
        f"""(() => {{
            const cell = document.querySelector('{live} .response-col_status');
            const status = cell ? cell.textContent.trim() : '';
            return status !== {json.dumps(unlike)} && status;
        }})()""",
        timeout=30,
        what="the live response",
    )
    body = page.evaluate(
        f"document.querySelector('{live} .response-col_description pre')?.textContent ?? ''"
    )
    return str(status), str(body)


def test_swagger_ui_try_it_out_calls_a_public_route_through_the_gateway(
    swagger_page: Page, stack: Stack, gateway: httpx.Client
) -> None:
    block = open_operation(swagger_page, f"{stack.gateway_url}/docs", "AuthService", "GetJwks")
    status, body = execute(swagger_page, block)
    assert status == "200", body
    assert json.loads(body) == gateway.get("/.well-known/jwks.json").json()


def test_swagger_ui_try_it_out_calls_an_authenticated_route_with_a_token(
    swagger_page: Page, stack: Stack, tenant: Tenant
) -> None:
    """Unauthorized, the gateway refuses the call; authorized with a real access token (what
    the Authorize dialog stores), Swagger UI sends it as `authorization: Bearer` and shows the
    caller's own user."""
    docs = f"{stack.gateway_url}/docs"
    block = open_operation(swagger_page, docs, "AuthService", "GetCurrentUser")
    status, body = execute(swagger_page, block)
    assert status == "401", body
    authorized = swagger_page.evaluate(
        f"window.ui.preauthorizeApiKey('bearerAuth', {json.dumps(tenant.access_token)}) !== null"
    )
    assert authorized
    status, body = execute(swagger_page, block, unlike="401")
    assert status == "200", body
    user = json.loads(body)
    assert user["email"] == tenant.email
    assert user["tenant_id"] == tenant.tenant_id
