"""Fixtures for integration tests that need a database of their own.

`template` is a database with every migration applied, made once per module; `scratch` a
throw-away copy of it per test (its owner and app-role URLs); `db` the services' own
`Database` on that copy, as the application role (row-level security applies). A module that
needs something else under one of these names defines its own, which takes precedence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from devstack import Stack
from services.common.db import Database, open_pool
from tests.unit.webhook.harness import Scratch, migrated_template, scratch_copy


@pytest.fixture(scope="module")
def template(stack: Stack) -> Iterator[str]:
    with migrated_template(stack) as name:
        yield name


@pytest.fixture
def scratch(stack: Stack, template: str) -> Iterator[Scratch]:
    with scratch_copy(stack, template) as database:
        yield database


@pytest.fixture
async def db(scratch: Scratch) -> AsyncIterator[Database]:
    pool = await open_pool(scratch.app_url, min_size=1, max_size=8, name="scratch-test")
    try:
        yield Database(pool)
    finally:
        await pool.close()
