"""`python -m services.auth.admin`, run as operators run it, against the stack's PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from services.auth.keys import KeyRing

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def admin(stack) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as conn:
        yield conn


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "JWT_"))}
    return subprocess.run(
        [sys.executable, "-m", "services.auth.admin", *args],
        cwd=REPO_ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def new_tenant(admin: psycopg.Connection, plan: str = "free") -> str:
    tenant_id = str(uuid.uuid4())
    with admin.transaction():
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        admin.execute(
            "INSERT INTO tenants (id, name, plan) VALUES (%s, 'cli', %s)", (tenant_id, plan)
        )
    return tenant_id


def plan_of(admin: psycopg.Connection, tenant_id: str) -> str:
    with admin.transaction():
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        row = admin.execute("SELECT plan FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_set_plan_changes_the_plan_and_says_so(stack, admin: psycopg.Connection) -> None:
    tenant_id = new_tenant(admin)
    env = {"DATABASE_ADMIN_URL": stack.env["DATABASE_ADMIN_URL"]}
    done = cli("set-plan", tenant_id, "starter", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"tenant {tenant_id}: plan free -> starter"
    assert plan_of(admin, tenant_id) == "starter"
    again = cli("set-plan", tenant_id.upper(), "starter", env=env)
    assert again.returncode == 0, again.stderr
    assert "already starter" in again.stdout
    shown = cli("show-tenant", tenant_id, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "starter" in shown.stdout


def test_set_plan_falls_back_to_database_url(stack, admin: psycopg.Connection) -> None:
    # The application role works too: RLS admits the row because the command names its tenant.
    tenant_id = new_tenant(admin)
    done = cli("set-plan", tenant_id, "enterprise", env={"DATABASE_URL": stack.env["DATABASE_URL"]})
    assert done.returncode == 0, done.stderr
    assert plan_of(admin, tenant_id) == "enterprise"


def test_unknown_tenant_is_exit_1(stack) -> None:
    env = {"DATABASE_ADMIN_URL": stack.env["DATABASE_ADMIN_URL"]}
    for command in ("set-plan", "show-tenant"):
        args = [command, str(uuid.uuid4())] + (["starter"] if command == "set-plan" else [])
        done = cli(*args, env=env)
        assert done.returncode == 1
        assert "no tenant" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("set-plan", "not-a-uuid", "starter"),
        ("set-plan", "00000000-0000-0000-0000-000000000000", "platinum"),
    ],
)
def test_bad_usage_is_exit_2_without_touching_the_database(args: tuple[str, ...]) -> None:
    done = cli(*args, env={"DATABASE_ADMIN_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_no_database_url_is_exit_1() -> None:
    done = cli("show-tenant", str(uuid.uuid4()))
    assert done.returncode == 1
    assert "DATABASE_ADMIN_URL" in done.stderr


def test_help_lists_the_commands() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for command in ("set-plan", "show-tenant", "rotate-key"):
        assert command in done.stdout


def test_rotate_key_adds_a_key_that_signs_next(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    first = KeyRing.load(keys_dir).signing.kid
    done = cli("rotate-key", "--keys-dir", str(keys_dir))
    assert done.returncode == 0, done.stderr
    ring = KeyRing.load(keys_dir, generate_if_empty=False)
    assert ring.keys[0].kid == first
    assert len(ring.keys) == 2
    assert ring.signing.kid != first
    assert ring.signing.kid in done.stdout
    assert first in done.stdout  # named as the key to delete later
    assert (keys_dir / f"{ring.signing.kid}.pem").stat().st_mode & 0o777 == 0o600
