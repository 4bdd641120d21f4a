"""Fixtures for integration tests that need a database of their own.

`template` is a database with every migration applied, made once per module; `scratch` a
throw-away copy of it per test (its owner and app-role URLs); `db` the services' own
`Database` on that copy, as the application role (row-level security applies);
`fresh_database` a new empty database (its owner URL), for tests of the migrations themselves.
A module that needs something else under one of these names defines its own, which takes
precedence.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
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


@pytest.fixture
def fresh_database(stack: Stack) -> Iterator[str]:
    """A new empty database on the stack's server (owner URL); dropped afterwards."""
    admin_url = stack.env["DATABASE_ADMIN_URL"]
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
