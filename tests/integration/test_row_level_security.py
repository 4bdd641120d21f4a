"""Tenant isolation holds in PostgreSQL itself, for the role the services connect as."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

pytestmark = pytest.mark.integration

TENANT_TABLES = ("tenants", "users", "refresh_tokens", "lattices", "lattice_fields", "webhooks")


@pytest.fixture
def admin(stack) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as conn:
        yield conn


@pytest.fixture
def app(stack) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        yield conn


def _tenant(conn: psycopg.Connection, name: str) -> str:
    tenant_id = str(uuid.uuid4())
    with conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant_id, name))
        conn.execute(
            "INSERT INTO webhooks (id, tenant_id, url, event_types, secret)"
            " VALUES (%s, %s, 'https://example.com/h', ARRAY['*'], 'whsec_x')",
            (str(uuid.uuid4()), tenant_id),
        )
    return tenant_id


def test_app_role_cannot_bypass_rls_and_owns_nothing(admin: psycopg.Connection) -> None:
    row = admin.execute(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'catalytic_app'"
    ).fetchone()
    assert row == (False, False)
    owned = admin.execute(
        "SELECT count(*) FROM pg_tables"
        " WHERE schemaname = 'public' AND tableowner = 'catalytic_app'"
    ).fetchone()
    assert owned == (0,)


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_every_tenant_table_has_forced_rls(admin: psycopg.Connection, table: str) -> None:
    row = admin.execute(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s", (table,)
    ).fetchone()
    assert row == (True, True)


def test_a_tenant_sees_only_its_own_rows(app: psycopg.Connection) -> None:
    a = _tenant(app, "a")
    b = _tenant(app, "b")
    with app.transaction():
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (a,))
        tenants = [r[0] for r in app.execute("SELECT id::text FROM tenants").fetchall()]
        hooks = [r[0] for r in app.execute("SELECT tenant_id::text FROM webhooks").fetchall()]
    assert tenants == [a]
    assert hooks == [a]
    with app.transaction():
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (b,))
        assert app.execute(
            "SELECT count(*) FROM webhooks WHERE tenant_id = %s", (a,)
        ).fetchone() == (0,)


def test_without_tenant_context_nothing_is_visible(app: psycopg.Connection) -> None:
    _tenant(app, "c")
    with app.transaction():
        assert app.execute("SELECT count(*) FROM tenants").fetchone() == (0,)
        assert app.execute("SELECT count(*) FROM webhooks").fetchone() == (0,)


def test_writing_another_tenants_row_is_refused(app: psycopg.Connection) -> None:
    a = _tenant(app, "d")
    b = _tenant(app, "e")
    with app.transaction():
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (a,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege), app.transaction():
            app.execute(
                "INSERT INTO webhooks (id, tenant_id, url, event_types, secret)"
                " VALUES (%s, %s, 'https://example.com/h', ARRAY['*'], 'whsec_x')",
                (str(uuid.uuid4()), b),
            )


def test_tenant_context_does_not_leak_past_the_transaction(app: psycopg.Connection) -> None:
    a = _tenant(app, "f")
    with app.transaction():
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (a,))
    with app.transaction():
        assert app.execute("SELECT count(*) FROM tenants").fetchone() == (0,)


def test_login_lookup_admits_only_the_named_email(app: psycopg.Connection) -> None:
    tenant_id = str(uuid.uuid4())
    email = f"{uuid.uuid4().hex}@example.com"
    with app.transaction():
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        app.execute("INSERT INTO tenants (id, name) VALUES (%s, 'g')", (tenant_id,))
        app.execute(
            "INSERT INTO users (id, tenant_id, email, password_hash, role)"
            " VALUES (%s, %s, %s, 'h', 'owner')",
            (str(uuid.uuid4()), tenant_id, email),
        )
    with app.transaction():
        app.execute("SELECT set_config('app.lookup_email', %s, true)", (email,))
        emails = [r[0] for r in app.execute("SELECT email FROM users").fetchall()]
        assert emails == [email]
        # The lookup key opens nothing else.
        assert app.execute("SELECT count(*) FROM tenants").fetchone() == (0,)
