"""E2E fixtures: a fresh tenant per test, registered and logged in through the gateway."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.helpers import Tenant, register_and_login


@pytest.fixture
def tenant(gateway: httpx.Client) -> Tenant:
    return register_and_login(gateway)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `after_e2e` run after every other collected test (e.g. the scan of the audit
    trail for secrets, which judges what the whole suite recorded)."""
    last = [item for item in items if item.get_closest_marker("after_e2e")]
    items[:] = [item for item in items if item not in last] + last
