"""`python -m services.auth.admin`, run as operators run it, against the stack's PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from services.auth.hsm_keys import Pkcs11KeyRing
from services.auth.keys import KeyRing
from services.auth.signing import SigningKeyRing
from tests.unit.common.softhsm import clear_signing_keys, softhsm_token

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
    for command in ("set-plan", "show-tenant", "rotate-key", "retire-key", "list-keys"):
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


@pytest.fixture(params=["file", "pkcs11"])
def keys_env(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[dict[str, str], Callable[[], SigningKeyRing]]]:
    """One signing key of each provider: the admin's settings, and how to open the ring here."""
    if request.param == "file":
        keys_dir = tmp_path / "keys"
        KeyRing.load(keys_dir)
        yield {"JWT_KEYS_DIR": str(keys_dir)}, lambda: KeyRing.load(keys_dir)
        return
    token = softhsm_token()
    clear_signing_keys(token)
    ring = Pkcs11KeyRing(token.settings())
    ring.create()
    ring.close()
    try:
        yield token.signing_env(), lambda: Pkcs11KeyRing(token.settings())
    finally:
        clear_signing_keys(token)


def kids(open_ring: Callable[[], SigningKeyRing]) -> tuple[str, ...]:
    ring = open_ring()
    try:
        return ring.kids()
    finally:
        ring.close()


def test_rotate_list_and_retire_keys_under_each_provider(
    keys_env: tuple[dict[str, str], Callable[[], SigningKeyRing]],
) -> None:
    env, open_ring = keys_env
    [first] = kids(open_ring)

    rotated = cli("rotate-key", env=env)
    assert rotated.returncode == 0, rotated.stderr
    [old, new] = kids(open_ring)
    assert old == first
    assert new in rotated.stdout
    assert first in rotated.stdout  # named as the key to retire later
    listed = cli("list-keys", env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"  {first}\n  {new}  (signs)" in listed.stdout

    refused = cli("retire-key", new, env=env)  # the newest signs: rotate first
    assert refused.returncode == 1
    assert "rotate-key" in refused.stderr
    unknown = cli("retire-key", "es256-20200101T000000Z-00000000", env=env)
    assert unknown.returncode == 1
    assert "no signing key" in unknown.stderr
    assert kids(open_ring) == (first, new)

    retired = cli("retire-key", first, env=env)
    assert retired.returncode == 0, retired.stderr
    assert "restart auth" in retired.stdout
    assert kids(open_ring) == (new,)


def test_rotate_key_makes_the_first_key_in_an_empty_token() -> None:
    token = softhsm_token()
    clear_signing_keys(token)
    try:
        done = cli("rotate-key", env=token.signing_env())
        assert done.returncode == 0, done.stderr
        assert "this is the first key" in done.stdout
        ring = Pkcs11KeyRing(token.settings())
        try:
            [kid] = ring.kids()
        finally:
            ring.close()
        assert f"created kid {kid}" in done.stdout
    finally:
        clear_signing_keys(token)


def test_a_token_without_a_pin_is_exit_1() -> None:
    env = {**softhsm_token().signing_env(), "PKCS11_PIN": ""}
    for command in ("rotate-key", "list-keys"):
        done = cli(command, env=env)
        assert done.returncode == 1
        assert "PKCS11_PIN" in done.stderr
