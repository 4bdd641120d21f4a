"""Tenant isolation in PostgreSQL, for every tenant-owned table the catalog holds at test time.

The tables are discovered, not listed: every table in `public` with a `tenant_id` column, plus
`tenants` itself (keyed on `id`). Rows are seeded generically from the catalog (column types,
foreign keys, simple CHECK constraints), so a new table is covered the day it is created; a
table the seeder cannot fill fails the test until `SEED_HINTS` says how. A table without
`tenant_id` must be declared in `GLOBAL_TABLES`, or the test fails.

`isolation_findings` is the check; `test_the_check_reports_a_sabotaged_policy` proves that it
fails when a policy is weakened, on a throw-away database built from the migrations.
"""

from __future__ import annotations

import base64
import io
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from services.common.migrate import migrate

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
APP_ROLE = "catalytic_app"
# Tables that hold no tenant's data, on purpose. Anything else must carry tenant_id.
GLOBAL_TABLES = frozenset({"schema_migrations"})
# Values the generic seeder cannot infer from a column's type and CHECK constraints:
# {table: {column: make a fresh value}}. Add one here when a new table fails to seed.
SEED_HINTS: dict[str, dict[str, Callable[[], object]]] = {
    "api_keys": {
        "prefix": lambda: base64.b32encode(secrets.token_bytes(10)).decode().lower()[:12],
        "secret_hash": lambda: secrets.token_hex(32),
    },
    "audit_events": {
        "action": lambda: f"lattice.create_{secrets.choice('abcdefgh')}",
        "prev_hash": lambda: secrets.token_bytes(32),
        "hash": lambda: secrets.token_bytes(32),
    },
    "audit_chain_heads": {
        "hash": lambda: secrets.token_bytes(32),
        "pruned_hash": lambda: secrets.token_bytes(32),
    },
}
# The tables the schema had when this test was written: discovery must find at least these.
KNOWN_TENANT_TABLES = frozenset(
    {
        "tenants",
        "users",
        "refresh_tokens",
        "lattices",
        "lattice_fields",
        "webhooks",
        "memberships",
        "invitations",
        "audit_events",
        "audit_chain_heads",
    }
)

Conn = psycopg.Connection[Any]


# ---------------------------------------------------------------------------- the catalog
@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool
    has_default: bool  # a DEFAULT, an identity or a generated column: the database fills it


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """What the seeder and the check need to know about one tenant-owned table."""

    name: str
    tenant_column: str  # `id` for tenants, `tenant_id` everywhere else
    columns: tuple[Column, ...]
    foreign_keys: tuple[ForeignKey, ...]
    unique_columns: frozenset[str]  # columns of a primary key or unique constraint/index
    checks: tuple[str, ...]  # pg_get_constraintdef of each CHECK constraint


def public_tables(admin: Conn) -> list[str]:
    rows = admin.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


def tenant_table_names(admin: Conn) -> list[str]:
    """`tenants` and every public table with a tenant_id column, parents before children."""
    rows = admin.execute(
        "SELECT c.relname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
        "   AND a.attname = 'tenant_id' AND NOT a.attisdropped ORDER BY 1"
    ).fetchall()
    names = [row[0] for row in rows]
    if "tenants" in public_tables(admin):
        names.insert(0, "tenants")
    return names


def describe(admin: Conn, name: str) -> Table:
    oid = admin.execute("SELECT %s::regclass::oid", (f"public.{name}",)).fetchone()
    assert oid is not None
    columns = tuple(
        Column(row[0], row[1], row[2], row[3])
        for row in admin.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull,"
            "       atthasdef OR attidentity <> '' OR attgenerated <> ''"
            " FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum",
            oid,
        )
    )
    foreign_keys = tuple(
        ForeignKey(tuple(row[0]), row[1], tuple(row[2]))
        for row in admin.execute(
            "SELECT array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(num, i)"
            "             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num"
            "             ORDER BY k.i),"
            "       r.relname,"
            "       array(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(num, i)"
            "             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num"
            "             ORDER BY k.i)"
            " FROM pg_constraint c JOIN pg_class r ON r.oid = c.confrelid"
            " WHERE c.conrelid = %s AND c.contype = 'f' ORDER BY c.conname",
            oid,
        )
    )
    unique_columns = frozenset(
        row[0]
        for row in admin.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = %s AND i.indisunique",
            oid,
        )
    )
    checks = tuple(
        row[0]
        for row in admin.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s AND contype = 'c'",
            oid,
        )
    )
    return Table(
        name=name,
        tenant_column="id" if name == "tenants" else "tenant_id",
        columns=columns,
        foreign_keys=foreign_keys,
        unique_columns=unique_columns,
        checks=checks,
    )


def tenant_tables(admin: Conn) -> list[Table]:
    return [describe(admin, name) for name in tenant_table_names(admin)]


# ---------------------------------------------------------------------------- the seeder
_ONE_OF = re.compile(r"\(?\(?(\w+) = ANY \(ARRAY\['((?:[^']|'')*)'")
_AT_LEAST = re.compile(r"\((\w+) >= (\d+)\)")
_NUMERIC = ("smallint", "integer", "bigint", "numeric", "real", "double precision")


class SeedError(Exception):
    """The generic seeder cannot fill a column; SEED_HINTS must say how."""


def _value_for(table: Table, column: Column) -> object:
    hints = SEED_HINTS.get(table.name, {})
    if column.name in hints:
        return hints[column.name]()
    for check in table.checks:
        for match in _ONE_OF.finditer(check):
            if match[1] == column.name:
                return match[2].replace("''", "'")
    kind = column.type
    if kind == "uuid":
        return str(uuid.uuid4())
    if kind in ("text", "citext") or kind.startswith("character"):
        return f"iso-{uuid.uuid4().hex[:12]}"
    if kind.startswith(_NUMERIC):
        bounds = [
            int(m[2])
            for check in table.checks
            for m in _AT_LEAST.finditer(check)
            if m[1] == column.name
        ]
        return max([2, *bounds])
    if kind == "boolean":
        return True
    if kind.startswith("timestamp"):
        return datetime.now(UTC) + timedelta(days=1)
    if kind == "date":
        return (datetime.now(UTC) + timedelta(days=1)).date()
    if kind == "bytea":
        return b"\x00"
    if kind in ("text[]", "character varying[]"):
        return [f"iso-{uuid.uuid4().hex[:12]}"]
    if kind in ("json", "jsonb"):
        return Jsonb({})
    if kind == "inet":
        return "192.0.2.1"
    raise SeedError(f"{table.name}.{column.name} ({kind}): no generic value; add it to SEED_HINTS")


def new_row(
    table: Table, tenant_id: str, parents: Callable[[str], dict[str, Any]]
) -> dict[str, object]:
    """Column values for a fresh row of `table` owned by `tenant_id`.

    Foreign keys point at the owner's existing rows (`parents(table_name)`); every unique
    column that is not a foreign key gets a fresh value; columns with defaults are left out.
    """
    values: dict[str, object] = {table.tenant_column: tenant_id}
    for fk in table.foreign_keys:
        if fk.ref_table == "tenants" and fk.columns == (table.tenant_column,):
            continue
        if fk.ref_table == table.name:
            continue  # a self-reference: left NULL (or to SEED_HINTS)
        parent = parents(fk.ref_table)
        for column, ref_column in zip(fk.columns, fk.ref_columns, strict=True):
            values.setdefault(column, parent[ref_column])
    for column in table.columns:
        if column.name in values:
            continue
        hinted = column.name in SEED_HINTS.get(table.name, {})
        if hinted or (column.not_null and not column.has_default):
            values[column.name] = _value_for(table, column)
    return values


def insert_statement(
    table: Table, values: dict[str, object], *, returning: bool = False
) -> sql.Composed:
    # No RETURNING on probes: it would apply the SELECT policies to the new row too, and so
    # hide a weakened WITH CHECK.
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}){}").format(
        sql.Identifier(table.name),
        sql.SQL(", ").join(sql.Identifier(name) for name in values),
        sql.SQL(", ").join(sql.Placeholder() for _ in values),
        sql.SQL(" RETURNING *" if returning else ""),
    )


@dataclass
class Seeded:
    """One tenant's seeded rows, a row per table."""

    tenant_id: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)


def seed_tenant(admin_url: str, tables: list[Table]) -> Seeded:
    """A new tenant with one committed row in every tenant-owned table (as the owner role)."""
    seeded = Seeded(str(uuid.uuid4()))
    by_name = {table.name: table for table in tables}
    with psycopg.connect(admin_url, row_factory=dict_row) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (seeded.tenant_id,))

        def row_of(name: str) -> dict[str, Any]:
            if name not in seeded.rows:
                if name not in by_name:
                    raise SeedError(f"a foreign key points at {name}, which has no tenant_id")
                table = by_name[name]
                values = new_row(table, seeded.tenant_id, row_of)
                try:
                    with conn.transaction():
                        row = conn.execute(
                            insert_statement(table, values, returning=True),
                            list(values.values()),
                        ).fetchone()
                except psycopg.Error as exc:
                    raise SeedError(
                        f"cannot seed {name} generically ({exc.sqlstate}: {exc});"
                        " add its values to SEED_HINTS"
                    ) from exc
                assert row is not None
                seeded.rows[name] = row
            return seeded.rows[name]

        for table in tables:
            row_of(table.name)
    return seeded


# ---------------------------------------------------------------------------- the check
def _count(conn: Conn, query: sql.Composable, params: tuple[object, ...] = ()) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _rowcount_or_refused(
    conn: Conn, tenant: str | None, query: sql.Composable, params: tuple[object, ...]
) -> int:
    """Rows the statement touched, in a transaction that is always rolled back; 0 if refused."""
    try:
        with conn.transaction(force_rollback=True):
            if tenant is not None:
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
            return conn.execute(query, params).rowcount
    except psycopg.errors.InsufficientPrivilege:
        return 0


def _insert_refused(
    conn: Conn, tenant: str | None, query: sql.Composable, params: list[object]
) -> str | None:
    """None when the INSERT is refused by row-level security; else what happened instead."""
    try:
        with conn.transaction(force_rollback=True):
            if tenant is not None:
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
            conn.execute(query, params)
    except psycopg.errors.InsufficientPrivilege:
        return None
    except psycopg.Error as exc:
        return f"it failed with {exc.sqlstate} ({type(exc).__name__}), not a policy violation"
    return "it was accepted"


def isolation_findings(
    app: Conn, table: Table, owner: Seeded, other: Seeded, probe: dict[str, object]
) -> list[str]:
    """Every way `other` (or no tenant at all) can see or touch `owner`'s rows in `table`.

    `app` is an autocommit connection as catalytic_app; `probe` is a fresh row for `owner`
    that `other` tries to insert. An empty list means the table is isolated.
    """
    found: list[str] = []
    name, key = sql.Identifier(table.name), sql.Identifier(table.tenant_column)
    select_owner = sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(name, key)
    select_foreign = sql.SQL("SELECT count(*) FROM {} WHERE {} IS DISTINCT FROM %s").format(
        name, key
    )
    update = sql.SQL("UPDATE {} SET {} = {} WHERE {} = %s").format(name, key, key, key)
    delete = sql.SQL("DELETE FROM {} WHERE {} = %s").format(name, key)
    insert = insert_statement(table, probe)

    with app.transaction(force_rollback=True):
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (owner.tenant_id,))
        if _count(app, select_owner, (owner.tenant_id,)) < 1:
            found.append("the owner cannot see its own seeded row, so nothing below means much")
    with app.transaction(force_rollback=True):
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (other.tenant_id,))
        if n := _count(app, select_owner, (owner.tenant_id,)):
            found.append(f"SELECT with B's context sees {n} of A's rows")
        if n := _count(app, select_foreign, (other.tenant_id,)):
            found.append(f"SELECT with B's context sees {n} rows of other tenants")
    if n := _rowcount_or_refused(app, other.tenant_id, update, (owner.tenant_id,)):
        found.append(f"UPDATE with B's context changed {n} of A's rows")
    if n := _rowcount_or_refused(app, other.tenant_id, delete, (owner.tenant_id,)):
        found.append(f"DELETE with B's context removed {n} of A's rows")
    if outcome := _insert_refused(app, other.tenant_id, insert, list(probe.values())):
        found.append(f"INSERT of a row with A's tenant_id under B's context: {outcome}")

    with app.transaction(force_rollback=True):
        if n := _count(app, sql.SQL("SELECT count(*) FROM {}").format(name)):
            found.append(f"SELECT without a tenant context sees {n} rows")
    if n := _rowcount_or_refused(app, None, update, (owner.tenant_id,)):
        found.append(f"UPDATE without a tenant context changed {n} of A's rows")
    if n := _rowcount_or_refused(app, None, delete, (owner.tenant_id,)):
        found.append(f"DELETE without a tenant context removed {n} of A's rows")
    if outcome := _insert_refused(app, None, insert, list(probe.values())):
        found.append(f"INSERT without a tenant context: {outcome}")
    return found


def matrix(admin_url: str, app_url: str) -> dict[str, list[str]]:
    """Seeds tenants A and B and checks every tenant-owned table: {table: findings}."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        tables = tenant_tables(admin)
    a, b = seed_tenant(admin_url, tables), seed_tenant(admin_url, tables)
    with psycopg.connect(app_url, autocommit=True) as app:
        return {
            table.name: isolation_findings(
                app, table, a, b, new_row(table, a.tenant_id, a.rows.__getitem__)
            )
            for table in tables
        }


def leaks_only(findings: dict[str, list[str]]) -> dict[str, list[str]]:
    return {table: found for table, found in findings.items() if found}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture
def admin(stack) -> Iterator[Conn]:
    with psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as conn:
        yield conn


def _with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


@pytest.fixture
def scratch_database(stack) -> Iterator[tuple[str, str]]:
    """(admin URL, app URL) of a new database built from migrations/; dropped afterwards."""
    admin_url = stack.env["DATABASE_ADMIN_URL"]
    name = f"isolation_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        scratch_admin = _with_database(admin_url, name)
        migrate(scratch_admin, MIGRATIONS, out=io.StringIO())
        yield scratch_admin, _with_database(stack.env["DATABASE_URL"], name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


# ---------------------------------------------------------------------------- the tests
def test_discovery_finds_every_known_tenant_table(admin: Conn) -> None:
    assert set(tenant_table_names(admin)) >= KNOWN_TENANT_TABLES


def test_every_table_is_tenant_owned_or_declared_global(admin: Conn) -> None:
    unclassified = set(public_tables(admin)) - set(tenant_table_names(admin)) - GLOBAL_TABLES
    assert not unclassified, (
        f"{sorted(unclassified)} have no tenant_id column: add one (with RLS) or, if they hold"
        " no tenant's data, list them in GLOBAL_TABLES"
    )


def test_no_tenant_can_see_or_touch_another_tenants_rows(stack) -> None:
    findings = matrix(stack.env["DATABASE_ADMIN_URL"], stack.env["DATABASE_URL"])
    assert set(findings) >= KNOWN_TENANT_TABLES
    assert leaks_only(findings) == {}


@pytest.mark.parametrize(
    ("sabotage", "table", "expected"),
    [
        pytest.param(
            "DROP POLICY webhooks_isolation ON webhooks;"
            " CREATE POLICY webhooks_isolation ON webhooks USING (true)",
            "webhooks",
            ("SELECT with B's context", "UPDATE with B's", "DELETE with B's", "INSERT of a row"),
            id="policy-using-true",
        ),
        pytest.param(
            "ALTER TABLE lattice_fields DISABLE ROW LEVEL SECURITY",
            "lattice_fields",
            ("SELECT with B's context", "SELECT without", "UPDATE with B's", "DELETE with B's"),
            id="rls-disabled",
        ),
        pytest.param(
            "CREATE POLICY debug_read ON users FOR SELECT USING (true)",
            "users",
            ("SELECT with B's context", "SELECT without"),
            id="extra-permissive-policy",
        ),
        pytest.param(
            "ALTER POLICY lattices_isolation ON lattices WITH CHECK (true)",
            "lattices",
            ("INSERT of a row", "INSERT without"),
            id="with-check-true",
        ),
        pytest.param(
            "ALTER TABLE refresh_tokens NO FORCE ROW LEVEL SECURITY;"
            f" ALTER TABLE refresh_tokens OWNER TO {APP_ROLE}",
            "refresh_tokens",
            ("SELECT with B's context", "UPDATE with B's", "DELETE with B's", "INSERT of a row"),
            id="app-owns-table-without-force",
        ),
    ],
)
def test_the_check_reports_a_sabotaged_policy(
    scratch_database: tuple[str, str], sabotage: str, table: str, expected: tuple[str, ...]
) -> None:
    admin_url, app_url = scratch_database
    assert leaks_only(matrix(admin_url, app_url)) == {}, "the pristine copy must be clean"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sabotage)

    leaks = leaks_only(matrix(admin_url, app_url))

    assert set(leaks) == {table}, leaks
    for prefix in expected:
        assert any(finding.startswith(prefix) for finding in leaks[table]), leaks[table]


def test_every_tenant_table_forces_rls_with_a_policy(admin: Conn) -> None:
    problems = []
    for name in tenant_table_names(admin):
        row = admin.execute(
            "SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner),"
            "       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)"
            " FROM pg_class c WHERE c.oid = %s::regclass",
            (f"public.{name}",),
        ).fetchone()
        assert row is not None
        enabled, forced, owner, policies = row
        if not (enabled and forced):
            problems.append(f"{name}: row-level security enabled={enabled} forced={forced}")
        if owner == APP_ROLE:
            problems.append(f"{name}: owned by {APP_ROLE}")
        if policies == 0:
            problems.append(f"{name}: no policy (nothing would be visible, even to its tenant)")
    assert problems == []


def test_the_app_role_cannot_bypass_row_level_security(admin: Conn) -> None:
    row = admin.execute(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles"
        " WHERE rolname = %s",
        (APP_ROLE,),
    ).fetchone()
    assert row == (False, False, False, False)
    # Membership would let it SET ROLE to a role that owns tables or bypasses RLS.
    memberships = admin.execute(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
        " WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (APP_ROLE,),
    ).fetchall()
    assert memberships == []
    owned = admin.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relowner ="
        " (SELECT oid FROM pg_roles WHERE rolname = %s)"
        " UNION ALL SELECT p.proname FROM pg_proc p WHERE p.proowner ="
        " (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (APP_ROLE, APP_ROLE),
    ).fetchall()
    assert owned == []
    # Creating objects would make it an owner (and owners are exempt from unforced RLS).
    privileges = admin.execute(
        "SELECT has_schema_privilege(%s, 'public', 'CREATE'),"
        "       has_database_privilege(%s, current_database(), 'CREATE')",
        (APP_ROLE, APP_ROLE),
    ).fetchone()
    assert privileges == (False, False)


def test_no_view_or_security_definer_function_bypasses_row_level_security(admin: Conn) -> None:
    # A view runs with its owner's rights and a SECURITY DEFINER function with its definer's:
    # either would read around the policies on the app role's behalf.
    views = admin.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')"
        "   AND has_table_privilege(%s, c.oid, 'SELECT')"
        "   AND NOT coalesce('security_invoker=true' = ANY(c.reloptions), false)",
        (APP_ROLE,),
    ).fetchall()
    assert views == []
    definers = admin.execute(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND p.prosecdef"
        "   AND has_function_privilege(%s, p.oid, 'EXECUTE')",
        (APP_ROLE,),
    ).fetchall()
    assert definers == []


def test_foreign_keys_cannot_cross_tenants(admin: Conn) -> None:
    # Foreign-key checks bypass RLS, so a key between tenant tables must include tenant_id.
    crossing = [
        f"{table.name}({', '.join(fk.columns)}) -> {fk.ref_table}"
        for table in tenant_tables(admin)
        for fk in table.foreign_keys
        if fk.ref_table != "tenants" and "tenant_id" not in fk.columns
    ]
    assert crossing == []
