"""devstack/stack.py: the gateway allows browser origins only when GATEWAY_CORS_ORIGINS is set."""

from __future__ import annotations

from pathlib import Path

from devstack import Stack


def test_make_up_allows_no_origin_by_default(tmp_path: Path) -> None:
    stack = Stack.from_env({"RUN_DIR": str(tmp_path)})
    assert stack.envoy.config.cors_origins == ()


def test_make_up_passes_the_configured_origins_to_the_gateway(tmp_path: Path) -> None:
    stack = Stack.from_env(
        {"RUN_DIR": str(tmp_path), "GATEWAY_CORS_ORIGINS": "https://a.example, https://b.example"}
    )
    assert stack.envoy.config.cors_origins == ("https://a.example", "https://b.example")
