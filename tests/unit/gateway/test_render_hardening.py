"""gateway/render.py: CORS, the TLS listener, the API documents and limits, as rendered."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.render import GatewayConfig, RenderError, render


def test_defaults_have_no_cors_origin_no_tls_listener_and_serve_the_documents() -> None:
    text = render(GatewayConfig())
    assert "allow_origin_string_match: []" in text
    assert "public_tls" not in text
    assert 'strict-transport-security, value: ""' in text
    assert "docs/api/openapi.json" in text
    assert "swagger-ui-dist/swagger-ui-bundle.js" in text
    assert "redoc/bundles/redoc.standalone.js" in text
    assert "max_active_downstream_connections: 10000" in text
    assert "max_tokens: 2000" in text


def test_cors_origins_are_exact_matches() -> None:
    config = GatewayConfig.from_env(
        {"GATEWAY_CORS_ORIGINS": "https://a.example, https://b.example"}
    )
    assert config.cors_origins == ("https://a.example", "https://b.example")
    text = render(config)
    assert '[{"exact": "https://a.example"}, {"exact": "https://b.example"}]' in text


@pytest.mark.parametrize("origin", ["a.example", "https://a.example/"])
def test_bad_cors_origins_are_refused(origin: str) -> None:
    with pytest.raises(RenderError, match="GATEWAY_CORS_ORIGINS"):
        render(GatewayConfig(cors_origins=(origin,)))


def test_tls_listener_and_hsts_with_a_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    text = render(GatewayConfig(tls_cert=cert, tls_key=key, tls_port=9443))
    assert "name: public_tls" in text
    assert "port_value: 9443" in text
    assert "filters: *public_filters" in text
    assert f'certificate_chain: {{filename: "{cert}"}}' in text
    assert 'strict-transport-security, value: "max-age=' in text


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("cert")
    with pytest.raises(RenderError, match="together"):
        render(GatewayConfig(tls_cert=cert))
    with pytest.raises(RenderError, match="does not exist"):
        render(GatewayConfig(tls_cert=cert, tls_key=tmp_path / "missing.pem"))


def test_missing_web_assets_make_the_docs_503_not_a_start_failure(tmp_path: Path) -> None:
    text = render(dataclasses.replace(GatewayConfig(), web_assets=tmp_path))
    assert "status: 503" in text
    assert "missing.txt" in text


def test_the_missing_assets_body_is_plain_text_for_a_flat_status() -> None:
    """local_reply_config makes the file's text the `message` of the 503's JSON Status: JSON
    in the file would end up as a Status nested in a string."""
    from gateway.render import DOCS_PAGES

    text = (DOCS_PAGES / "missing.txt").read_text()
    assert not text.lstrip().startswith("{")
    assert "\n" not in text
    assert "npm install" in text


def test_missing_openapi_document_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="OpenAPI"):
        render(GatewayConfig(openapi_document=tmp_path / "openapi.json"))
