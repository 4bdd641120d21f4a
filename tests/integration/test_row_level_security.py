"""The mechanisms under tenant isolation: per-transaction context and the narrow lookup policies.

The isolation matrix itself (every tenant table, every statement, the app role's privileges)
is in test_isolation_sql.py; this file checks what that matrix relies on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from services.common.db import Database, open_pool
from tests.integration.test_isolation_sql import Seeded, seed_tenant, tenant_tables

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]
# `(column = app_lookup('name'::text))`, the one shape a lookup policy may have.
_LOOKUP_POLICY = re.compile(r"^\((\w+) = app_lookup\('(\w+)'::text\)\)$")
# `(app_lookup('name'::text) = 'value'::text)`: a background worker's read-only view across
# tenants. Each one is reviewed and listed here with the only table it may open; a new one
# fails the tests until it is added (and its ADR written).
# A view may be narrowed further to some rows: `((app_lookup(...) = '...') AND (<rows>))`.
_SERVICE_POLICY = re.compile(
    r"^\(\(?app_lookup\('(\w+)'::text\) = '(\w+)'::text\)(?: AND \((.+)\)\))?$"
)
SERVICE_CONTEXTS = {
    ("webhook_deliveries", "webhook_deliveries_worker_read"): ("delivery_worker", "on"),
    ("lattice_outbox", "lattice_outbox_relay_read"): ("outbox_relay", "lattice"),
    # ADR "Webhook retention": finds events older than WEBHOOK_RETENTION_DAYS; deletes per tenant.
    ("webhook_events", "webhook_events_retention_read"): ("webhook_retention", "on"),
    # ADR 57: the denylist rebuild reads unexpired revocations; the purge finds expired ones
    # and deletes per tenant.
    ("revoked_access_tokens", "revoked_access_tokens_rebuild_read"): ("denylist_rebuild", "on"),
    # ADR 57: the rebuild restores the markers of recently deleted API keys, never a live one.
    ("api_keys", "api_keys_revoked_rebuild_read"): ("api_key_revocations", "on"),
    # ADR 56: the admin's key commands find endpoints across tenants, as the tables' owner only.
    ("webhooks", "webhooks_key_maintenance_read"): ("webhook_keys", "on"),
}
# The rows a narrowed view admits, for the contexts that have one.
SERVICE_CONTEXT_ROWS = {
    ("api_keys", "api_keys_revoked_rebuild_read"): "revoked_at IS NOT NULL",
}


@pytest.fixture
def admin(stack) -> Iterator[Conn]:
    with psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as conn:
        yield conn


@pytest.fixture
def app(stack) -> Iterator[Conn]:
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        yield conn


@pytest.fixture
def two_tenants(stack, admin: Conn) -> tuple[Seeded, Seeded]:
    tables = tenant_tables(admin)
    admin_url = stack.env["DATABASE_ADMIN_URL"]
    return seed_tenant(admin_url, tables), seed_tenant(admin_url, tables)


def _count(conn: Conn, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def _app_lookup_policies(admin: Conn) -> list[tuple[str, str, str, str, str]]:
    """(table, policy, command, qual, with_check) of every policy that reads app_lookup()."""
    rows = admin.execute(
        "SELECT tablename, policyname, cmd, coalesce(qual, ''), coalesce(with_check, '')"
        " FROM pg_policies WHERE schemaname = 'public'"
        "   AND (qual LIKE '%%app_lookup(%%' OR with_check LIKE '%%app_lookup(%%')"
        " ORDER BY 1, 2"
    ).fetchall()
    return [tuple(row) for row in rows]


def _lookup_policies(admin: Conn) -> list[tuple[str, str, str, str, str]]:
    """The row-lookup policies: those that are not reviewed service contexts."""
    return [p for p in _app_lookup_policies(admin) if (p[0], p[1]) not in SERVICE_CONTEXTS]


def test_service_context_policies_are_reviewed_read_only_and_open_one_table(
    admin: Conn, app: Conn, two_tenants: tuple[Seeded, Seeded]
) -> None:
    tables = [table.name for table in tenant_tables(admin)]
    found = {(p[0], p[1]): p for p in _app_lookup_policies(admin) if _SERVICE_POLICY.match(p[3])}
    assert set(found) == set(SERVICE_CONTEXTS)
    for (table, policy), (name, value) in SERVICE_CONTEXTS.items():
        _, _, command, qual, with_check = found[(table, policy)]
        assert command == "SELECT", f"{policy} must be read-only, is {command}"
        assert with_check == ""
        match = _SERVICE_POLICY.match(qual)
        assert match is not None
        assert (match[1], match[2]) == (name, value)
        assert match[3] == SERVICE_CONTEXT_ROWS.get((table, policy)), f"{policy}: {qual}"
        with app.transaction(force_rollback=True):
            app.execute("SELECT set_config(%s, %s, true)", (f"app.lookup_{name}", value))
            for other in tables:
                if other != table:
                    assert _count(app, other) == 0, f"{policy} opened {other}"
            changed = app.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table))).rowcount
            assert changed == 0, f"{policy} let a DELETE through"
        with app.transaction(force_rollback=True):
            app.execute("SELECT set_config(%s, 'off', true)", (f"app.lookup_{name}",))
            assert _count(app, table) == 0, f"a wrong {name} value opened {table}"


# ---------------------------------------------------------------------------- tenant context
def test_tenant_context_does_not_leak_past_the_transaction(
    app: Conn, two_tenants: tuple[Seeded, Seeded]
) -> None:
    a, _ = two_tenants
    with app.transaction():
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (a.tenant_id,))
        assert _count(app, "tenants") == 1
    with app.transaction():
        assert _count(app, "tenants") == 0


async def test_a_pooled_connection_forgets_its_tenant(
    stack, two_tenants: tuple[Seeded, Seeded]
) -> None:
    """The services' own Database: the next borrower of a connection sees no tenant's rows."""
    a, _ = two_tenants
    pool = await open_pool(stack.env["DATABASE_URL"], min_size=1, max_size=1, name="rls-test")
    try:
        db = Database(pool)
        async with db.tenant_transaction(a.tenant_id) as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM tenants")
            assert await cur.fetchone() == {"n": 1}
        with pytest.raises(RuntimeError):
            async with db.tenant_transaction(a.tenant_id):
                raise RuntimeError("a request that fails half-way")
        async with db.transaction() as conn:
            cur = await conn.execute(
                "SELECT coalesce(current_setting('app.tenant_id', true), '') AS tenant,"
                " (SELECT count(*) FROM tenants) AS n"
            )
            assert await cur.fetchone() == {"tenant": "", "n": 0}
    finally:
        await pool.close()


async def test_a_one_round_trip_read_sees_one_tenant_and_leaves_no_trace(
    stack, two_tenants: tuple[Seeded, Seeded]
) -> None:
    """Database.tenant_statement: the setting and the query in one message, one implicit
    transaction; the next borrower of the connection sees no tenant's rows."""
    a, b = two_tenants
    pool = await open_pool(stack.env["DATABASE_URL"], min_size=1, max_size=1, name="rls-rows")
    try:
        db = Database(pool)
        for tenant in (a, b):
            rows = await db.tenant_statement(
                tenant.tenant_id, "SELECT id::text AS id FROM tenants WHERE %s::int = 1", (1,)
            )
            assert rows == [{"id": tenant.tenant_id}]
        # A hostile "tenant id" is a bound literal, not SQL: it matches nothing (or is refused
        # as not a uuid), and the statement it tries to smuggle in never runs.
        hostile = "x'); DROP TABLE lattices; --"
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            await db.tenant_statement(hostile, "SELECT count(*) AS n FROM tenants")
        async with db.transaction() as conn:
            cur = await conn.execute(
                "SELECT coalesce(current_setting('app.tenant_id', true), '') AS tenant,"
                " (SELECT count(*) FROM tenants) AS n, to_regclass('lattices') IS NOT NULL AS t"
            )
            assert await cur.fetchone() == {"tenant": "", "n": 0, "t": True}
    finally:
        await pool.close()


# ---------------------------------------------------------------------------- lookup policies
def test_lookup_policies_only_read_by_one_exact_key(admin: Conn) -> None:
    policies = _lookup_policies(admin)
    assert {p[0] for p in policies} >= {"users", "refresh_tokens"}
    for table, policy, command, qual, with_check in policies:
        assert command == "SELECT", f"{table}.{policy} must be read-only, is {command}"
        assert with_check == "", f"{table}.{policy} must not admit writes"
        assert _LOOKUP_POLICY.match(qual), f"{table}.{policy}: unexpected shape {qual}"


def test_a_lookup_admits_exactly_the_named_row_and_nothing_else(
    admin: Conn, app: Conn, two_tenants: tuple[Seeded, Seeded]
) -> None:
    a, b = two_tenants
    tables = [table.name for table in tenant_tables(admin)]
    for table, policy, _, qual, _ in _lookup_policies(admin):
        match = _LOOKUP_POLICY.match(qual)
        assert match is not None, qual
        column, lookup = match[1], match[2]
        key = sql.Identifier(column)
        with app.transaction(force_rollback=True):
            app.execute(
                "SELECT set_config(%s, %s, true)", (f"app.lookup_{lookup}", a.rows[table][column])
            )
            seen = app.execute(
                sql.SQL("SELECT {} FROM {}").format(key, sql.Identifier(table))
            ).fetchall()
            assert seen == [(a.rows[table][column],)], f"{policy} admitted {seen}"
            # The key opens nothing else: not B's row, not other tables, and no writes.
            for other in tables:
                if other != table:
                    assert _count(app, other) == 0, f"{policy} opened {other}"
            changed = app.execute(
                sql.SQL("UPDATE {} SET {} = {}").format(sql.Identifier(table), key, key)
            ).rowcount
            assert changed == 0, f"{policy} let an UPDATE through"
            removed = app.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table))).rowcount
            assert removed == 0, f"{policy} let a DELETE through"
        with app.transaction(force_rollback=True):
            app.execute("SELECT set_config(%s, '', true)", (f"app.lookup_{lookup}",))
            assert _count(app, table) == 0, f"an empty {lookup} lookup admitted rows"
        assert b.rows[table][column] != a.rows[table][column]
