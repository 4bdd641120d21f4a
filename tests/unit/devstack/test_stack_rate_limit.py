"""devstack/stack.py: GATEWAY_RATE_LIMIT_PER_S reaches the gateway backstop; load tests lift it."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import Stack, StackError
from gateway.render import GatewayConfig


def test_make_up_keeps_the_gateway_default_backstop(tmp_path: Path) -> None:
    stack = Stack.from_env({"RUN_DIR": str(tmp_path)})
    assert stack.envoy.config.rate_limit_per_s == GatewayConfig.rate_limit_per_s


def test_make_up_passes_the_configured_backstop_to_the_gateway(tmp_path: Path) -> None:
    stack = Stack.from_env({"RUN_DIR": str(tmp_path), "GATEWAY_RATE_LIMIT_PER_S": "50000"})
    assert stack.envoy.config.rate_limit_per_s == 50000


@pytest.mark.parametrize("value", ["0", "-5", "lots", "1.5"])
def test_a_backstop_that_is_not_a_positive_integer_stops_start_up(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(StackError, match="GATEWAY_RATE_LIMIT_PER_S"):
        Stack.from_env({"RUN_DIR": str(tmp_path), "GATEWAY_RATE_LIMIT_PER_S": value})


def test_a_private_stack_may_lift_the_backstop(tmp_path: Path) -> None:
    stack = Stack(tmp_path, gateway_rate_limit_per_s=1_000_000)
    assert stack.envoy.config.rate_limit_per_s == 1_000_000
