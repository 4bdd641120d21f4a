"""E2E fixtures: a fresh tenant per test, registered and logged in through the gateway."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.helpers import Tenant, register_and_login


@pytest.fixture
def tenant(gateway: httpx.Client) -> Tenant:
    return register_and_login(gateway)
