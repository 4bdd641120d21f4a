"""The API documents through the gateway: /openapi.json, Swagger UI at /docs, ReDoc at /redoc."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import httpx
import pytest

from devstack import Stack
from gateway.render import DEFAULT_OPENAPI


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
