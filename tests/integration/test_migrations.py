"""The migrations runner against a real PostgreSQL: applies once, detects edits, is safe twice."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import psycopg
import pytest

from services.common.migrate import MigrationError, migrate, read_applied, status, wait_for_current

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def test_applies_every_file_once_then_is_up_to_date(fresh_database: str) -> None:
    files = sorted(MIGRATIONS.glob("*.sql"))
    assert migrate(fresh_database, MIGRATIONS, out=io.StringIO()) == len(files)
    second = io.StringIO()
    assert migrate(fresh_database, MIGRATIONS, out=second) == 0
    assert "up to date" in second.getvalue()
    with psycopg.connect(fresh_database) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [int(f.name[:4]) for f in files]


def test_an_edited_applied_migration_is_refused(fresh_database: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    migrate(fresh_database, copy, out=io.StringIO())
    first = sorted(copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after being applied\n")
    assert not status(fresh_database, copy, out=io.StringIO())
    with pytest.raises(MigrationError):
        migrate(fresh_database, copy, out=io.StringIO())


def test_a_failing_migration_leaves_nothing_behind(fresh_database: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    (copy / "9999_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;\n"
    )
    with pytest.raises(MigrationError):
        migrate(fresh_database, copy, out=io.StringIO())
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        latest = max(int(f.name[:4]) for f in MIGRATIONS.glob("*.sql"))
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (latest,)


def test_the_app_role_waits_for_the_schema_then_sees_it_current(
    fresh_database: str, tmp_path: Path
) -> None:
    # What the Kubernetes initContainer does: as catalytic_app, before and after the Job.
    admin = psycopg.conninfo.conninfo_to_dict(fresh_database)
    app_url = psycopg.conninfo.make_conninfo(fresh_database, user="catalytic_app")
    before = sorted(MIGRATIONS.glob("*.sql"))[:1]
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(before[0], partial / before[0].name)
    migrate(fresh_database, partial, out=io.StringIO())  # the role exists, 0009 not applied yet
    with pytest.raises(MigrationError, match="not readable yet"):
        wait_for_current(lambda: read_applied(app_url), MIGRATIONS, timeout_s=0, out=io.StringIO())
    migrate(fresh_database, MIGRATIONS, out=io.StringIO())
    out = io.StringIO()
    wait_for_current(lambda: read_applied(app_url), MIGRATIONS, timeout_s=0, out=out)
    assert out.getvalue() == "schema is current\n"
    assert admin["dbname"] == psycopg.conninfo.conninfo_to_dict(app_url)["dbname"]


def test_field_bytes_are_never_recompressed_by_the_server(fresh_database: str) -> None:
    # The service compresses a field when that halves it and stores it raw otherwise; pglz
    # trying again cost ~90 ms of PostgreSQL's CPU per 4 MiB raw write (ADR 68).
    migrate(fresh_database, MIGRATIONS, out=io.StringIO())
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute(
            "SELECT attstorage FROM pg_attribute"
            " WHERE attrelid = 'lattice_fields'::regclass AND attname = 'data'"
        ).fetchone()
    assert row == ("e",)  # EXTERNAL: out of line, uncompressed
