"""Migration 0013 (teams) in SQL: the backfill, release N-1's writes on the new schema, and
what a membership holds together (ADR 64)."""

from __future__ import annotations

import io
import shutil
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from services.common.migrate import migrate

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
TEAMS = "0013_teams.sql"
Conn = psycopg.Connection[Any]


def app_url(database: str) -> str:
    return psycopg.conninfo.make_conninfo(database, user="catalytic_app")


def as_tenant(conn: Conn, tenant: str) -> None:
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))


def register_like_n_minus_1(conn: Conn) -> tuple[str, str]:
    """What release N-1's register and log-in write, as the app role: (tenant, user)."""
    tenant, user = str(uuid.uuid4()), str(uuid.uuid4())
    with conn.transaction():
        as_tenant(conn, tenant)
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'n-1')", (tenant,))
        conn.execute(
            "INSERT INTO users (id, tenant_id, email, password_hash, role)"
            " VALUES (%s, %s, %s, 'x', 'owner')",
            (user, tenant, f"{user}@example.com"),
        )
    with conn.transaction():
        as_tenant(conn, tenant)
        conn.execute(
            "INSERT INTO refresh_tokens (id, tenant_id, user_id, family_id, token_hash,"
            " expires_at) VALUES (%s, %s, %s, %s, %s, now() + interval '1 day')",
            (str(uuid.uuid4()), tenant, user, str(uuid.uuid4()), uuid.uuid4().hex),
        )
    return tenant, user


def memberships(conn: Conn, tenant: str) -> list[tuple[str, str]]:
    with conn.transaction():
        as_tenant(conn, tenant)
        rows = conn.execute("SELECT user_id::text, role FROM memberships").fetchall()
    return [(row[0], row[1]) for row in rows]


def test_every_user_becomes_a_member_of_its_tenant(fresh_database: str, tmp_path: Path) -> None:
    before = tmp_path / "before"
    before.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name < TEAMS:
            shutil.copy(path, before / path.name)
    migrate(fresh_database, before, out=io.StringIO())
    with psycopg.connect(app_url(fresh_database), autocommit=True) as app:
        tenant, user = register_like_n_minus_1(app)
    migrate(fresh_database, MIGRATIONS, out=io.StringIO())
    with psycopg.connect(app_url(fresh_database), autocommit=True) as app:
        assert memberships(app, tenant) == [(user, "owner")]


def test_release_n_minus_1_writes_still_hold_together(fresh_database: str) -> None:
    migrate(fresh_database, MIGRATIONS, out=io.StringIO())
    with psycopg.connect(app_url(fresh_database), autocommit=True) as app:
        # N-1's register gets its membership from the trigger, so its log-in's refresh token
        # satisfies the key on memberships.
        tenant, user = register_like_n_minus_1(app)
        assert memberships(app, tenant) == [(user, "owner")]
        # A refresh token for someone who is no member of the tenant is refused.
        stranger_token = (str(uuid.uuid4()), tenant, str(uuid.uuid4()), str(uuid.uuid4()))
        with app.transaction(force_rollback=True):
            as_tenant(app, tenant)
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                app.execute(
                    "INSERT INTO refresh_tokens (id, tenant_id, user_id, family_id, token_hash,"
                    " expires_at) VALUES (%s, %s, %s, %s, 'h', now())",
                    stranger_token,
                )
        # Ending the membership takes the tenant's refresh tokens along.
        with app.transaction():
            as_tenant(app, tenant)
            app.execute("DELETE FROM memberships WHERE user_id = %s", (user,))
            left = app.execute("SELECT count(*) FROM refresh_tokens").fetchone()
        assert left == (0,)


def test_a_deleted_user_takes_its_memberships_along(fresh_database: str) -> None:
    migrate(fresh_database, MIGRATIONS, out=io.StringIO())
    with psycopg.connect(app_url(fresh_database), autocommit=True) as app:
        tenant, user = register_like_n_minus_1(app)
        with app.transaction():
            as_tenant(app, tenant)
            app.execute("DELETE FROM users WHERE id = %s", (user,))
        assert memberships(app, tenant) == []


def test_a_membership_is_read_before_the_tenant_only_by_its_email(fresh_database: str) -> None:
    migrate(fresh_database, MIGRATIONS, out=io.StringIO())
    with psycopg.connect(app_url(fresh_database), autocommit=True) as app:
        _, user = register_like_n_minus_1(app)
        register_like_n_minus_1(app)
        with app.transaction():
            app.execute(
                "SELECT set_config('app.lookup_member_email', %s, true)", (f"{user}@example.com",)
            )
            seen = app.execute("SELECT user_id::text FROM memberships").fetchall()
            changed = app.execute("UPDATE memberships SET role = 'member'").rowcount
        assert seen == [(user,)]
        assert changed == 0
