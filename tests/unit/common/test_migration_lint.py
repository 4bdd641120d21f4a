"""The migration lint: statement splitting, each refused and allowed kind, the contract marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.migration_lint import (
    GRANDFATHERED,
    LintError,
    check_directory,
    check_sql,
    contract_reason,
    main,
    split_statements,
)

MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"


def _refused(sql: str) -> list[str]:
    return [finding.what for finding in check_sql(sql, "9999_x.sql")]


def test_the_repository_migrations_pass() -> None:
    # A new destructive migration without a contract header fails `make test` here.
    assert [str(f) for f in check_directory(MIGRATIONS)] == []


def test_a_grandfathered_file_is_pinned_to_its_checksum(tmp_path: Path) -> None:
    name = next(iter(GRANDFATHERED))
    original = (MIGRATIONS / name).read_text()
    (tmp_path / name).write_text(original)
    assert check_directory(tmp_path) == []
    (tmp_path / name).write_text(original + "\n-- edited\n")
    assert check_directory(tmp_path) != []


# ---------------------------------------------------------------- splitting


def test_splits_on_semicolons_outside_quotes_comments_and_dollar_quotes() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x text DEFAULT 'it''s; fine');
    /* block; /* nested; */ still comment; */
    SELECT E'back\\'slash; quote', "odd;""name";
    CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$
    BEGIN RETURN 1; END $body$;
    DO $$ BEGIN PERFORM 1; END $$;
    SELECT $tag$ $$ ; $tag$
    """
    statements = split_statements(sql)
    assert [s.keywords()[0] for s in statements] == ["CREATE", "SELECT", "CREATE", "DO", "SELECT"]
    assert [s.line for s in statements] == [3, 5, 6, 8, 9]
    assert statements[1].tokens[1].text == "E'back\\'slash; quote'"
    assert statements[1].tokens[3].text == 'odd;"name'


@pytest.mark.parametrize(
    "sql",
    ["SELECT 'open", 'SELECT "open', "SELECT $$ open", "/* /* */ open", "SELECT $a$ x $b$"],
)
def test_unterminated_quotes_and_comments_are_errors(sql: str) -> None:
    with pytest.raises(LintError):
        split_statements(sql)
    assert _refused(sql)[0].startswith("line 1: unterminated")


def test_keywords_in_strings_identifiers_comments_and_function_bodies_are_not_statements() -> None:
    assert _refused("SELECT 'DROP TABLE users';") == []
    assert _refused('CREATE TABLE "drop" (x int);') == []
    assert _refused("-- DROP TABLE users;\n/* TRUNCATE users; */ SELECT 1;") == []
    assert _refused("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DELETE FROM t $$;") == []


# ---------------------------------------------------------------- refused


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("DROP TABLE users;", "DROP TABLE"),
        ("drop table if exists users cascade;", "DROP TABLE"),
        ("DROP INDEX users_email_key;", "DROP INDEX"),
        ("DROP TYPE mood;", "DROP TYPE"),
        ("DROP SCHEMA old;", "DROP SCHEMA"),
        ("DROP SEQUENCE s;", "DROP SEQUENCE"),
        ("DROP ROLE catalytic_app;", "DROP ROLE"),
        ("DROP MATERIALIZED VIEW v;", "DROP VIEW v (not created again in this file)"),
        ("DROP FUNCTION app_lookup(text);", "DROP FUNCTION app_lookup (not created again"),
        ("DROP POLICY users_login_lookup ON users;", "DROP POLICY users_login_lookup (not"),
        ("DROP TRIGGER t ON webhook_deliveries;", "DROP TRIGGER t (not created again"),
        ("ALTER TABLE users DROP COLUMN role;", "ALTER TABLE ... DROP COLUMN"),
        ("ALTER TABLE users DROP role;", "ALTER TABLE ... DROP COLUMN"),
        ("ALTER TABLE IF EXISTS ONLY users DROP COLUMN IF EXISTS x;", "ALTER TABLE ... DROP"),
        ("ALTER TABLE users DROP CONSTRAINT users_email_key;", "ALTER TABLE ... DROP CONSTRAINT"),
        ("ALTER TABLE users ALTER COLUMN role TYPE varchar(10);", "ALTER COLUMN ... TYPE"),
        ("ALTER TABLE users ALTER role SET DATA TYPE text;", "ALTER COLUMN ... TYPE"),
        ("ALTER TABLE lattices ALTER blocked_count SET NOT NULL;", "ALTER COLUMN ... SET NOT"),
        ("ALTER TABLE users ALTER COLUMN role DROP DEFAULT;", "ALTER COLUMN ... DROP DEFAULT"),
        ("ALTER TABLE t ALTER COLUMN id DROP IDENTITY;", "ALTER COLUMN ... DROP IDENTITY"),
        ("ALTER TABLE users ADD COLUMN nick text NOT NULL;", "ADD COLUMN ... NOT NULL without"),
        ("ALTER TABLE users ADD nick text NOT NULL CHECK (nick <> '');", "ADD COLUMN ... NOT"),
        ("ALTER TABLE users RENAME TO accounts;", "ALTER TABLE ... RENAME"),
        ("ALTER TABLE users RENAME COLUMN email TO mail;", "ALTER TABLE ... RENAME"),
        ("ALTER TABLE users RENAME email TO mail;", "ALTER TABLE ... RENAME"),
        ("ALTER FUNCTION app_lookup(text) RENAME TO lookup;", "ALTER FUNCTION ... RENAME"),
        ("ALTER TYPE mood RENAME VALUE 'sad' TO 'blue';", "ALTER TYPE ... RENAME"),
        ("ALTER TABLE users SET SCHEMA archive;", "ALTER TABLE ... SET SCHEMA"),
        ("ALTER FUNCTION f() SET SCHEMA archive;", "ALTER FUNCTION ... SET SCHEMA"),
        ("ALTER TYPE address DROP ATTRIBUTE zip;", "ALTER TYPE ... DROP"),
        ("TRUNCATE lattice_outbox;", "TRUNCATE"),
        ("DELETE FROM lattice_outbox;", "DELETE without WHERE"),
        (
            "DELETE FROM t USING (SELECT id FROM u WHERE x) s;",
            "DELETE without WHERE",
        ),
        ("REVOKE SELECT ON users FROM catalytic_app;", "REVOKE"),
        ("DO $$ BEGIN EXECUTE 'x'; DROP TABLE users; END $$;", "DROP inside a DO block"),
    ],
)
def test_refused(sql: str, what: str) -> None:
    refused = _refused(sql)
    assert len(refused) == 1, refused
    assert refused[0].startswith(what)


def test_every_refused_action_of_one_alter_table_is_reported_with_its_line() -> None:
    findings = check_sql(
        "SELECT 1;\nALTER TABLE users\n  DROP COLUMN a,\n  ALTER COLUMN b TYPE int;", "x.sql"
    )
    assert [(f.line, f.what) for f in findings] == [
        (2, "ALTER TABLE ... DROP COLUMN"),
        (2, "ALTER COLUMN ... TYPE"),
    ]


# ---------------------------------------------------------------- allowed


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (id uuid PRIMARY KEY, n text NOT NULL);",
        "CREATE INDEX t_idx ON t (n);",
        "ALTER TABLE users ADD COLUMN nick text;",
        "ALTER TABLE users ADD COLUMN ordered boolean NOT NULL DEFAULT false;",
        "ALTER TABLE t ADD COLUMN seq bigint NOT NULL GENERATED ALWAYS AS IDENTITY;",
        "ALTER TABLE t ADD COLUMN c bigint CHECK (c IS NOT NULL OR true);",
        "ALTER TABLE users ADD CONSTRAINT users_tenant_id_id_key UNIQUE (tenant_id, id);",
        "ALTER TABLE users ALTER COLUMN role DROP NOT NULL;",
        "ALTER TABLE users ALTER COLUMN role SET DEFAULT 'member';",
        "ALTER TABLE users ENABLE ROW LEVEL SECURITY;",
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
        "CREATE POLICY p ON t USING (true);",
        "ALTER POLICY p ON t USING (tenant_id = app_tenant_id());",
        "GRANT SELECT ON schema_migrations TO catalytic_app;",
        "DELETE FROM lattice_outbox WHERE sent_at < now() - interval '1 day';",
        "UPDATE users SET nick = email;",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1) THEN CREATE ROLE r; END IF; END $$;",
        # A replacement: dropped and created again, by the same name, in the same file.
        "DROP POLICY users_login_lookup ON users;\n"
        "CREATE POLICY users_login_lookup ON users FOR SELECT USING (email = app_lookup('e'));",
        "DROP FUNCTION IF EXISTS public.f(int);\n"
        "CREATE FUNCTION public.f(int) RETURNS bigint LANGUAGE sql AS $$ SELECT 1::bigint $$;",
        'DROP VIEW "Odd";\nCREATE VIEW "Odd" AS SELECT 1;',
        "DROP TRIGGER t ON x;\nCREATE CONSTRAINT TRIGGER t AFTER INSERT ON x "
        "FOR EACH ROW EXECUTE FUNCTION f();",
    ],
)
def test_allowed(sql: str) -> None:
    assert _refused(sql) == []


def test_a_dropped_name_created_under_another_case_of_quoting_is_no_replacement() -> None:
    assert _refused('DROP VIEW "Odd";\nCREATE VIEW odd AS SELECT 1;') != []


# ---------------------------------------------------------------- the marker


def test_a_contract_migration_may_be_destructive() -> None:
    sql = (
        "-- Drop users.nick.\n"
        "--\n"
        "-- contract: release 2025.03 stopped reading users.nick (0012 added users.display_name)\n"
        "\n"
        "ALTER TABLE users DROP COLUMN nick;\n"
    )
    assert contract_reason(sql) == (
        "release 2025.03 stopped reading users.nick (0012 added users.display_name)"
    )
    assert _refused(sql) == []


@pytest.mark.parametrize(
    "sql",
    [
        "-- contract:\nDROP TABLE t;",  # no reason
        "DROP TABLE t;\n-- contract: too late, after the first statement\n",
        "/* -- contract: inside a block comment */ DROP TABLE t;",
        "SELECT '\n-- contract: in a string\n'; DROP TABLE t;",
    ],
)
def test_the_marker_counts_only_with_a_reason_in_the_leading_line_comments(sql: str) -> None:
    assert _refused(sql) != []


# ---------------------------------------------------------------- the command


def test_main_exits_1_naming_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE t (id int);\n")
    assert main(["check", str(tmp_path)]) == 0
    (tmp_path / "0002_bad.sql").write_text("-- Oops.\n\nDROP TABLE t;\n")
    assert main(["check", str(tmp_path)]) == 1
    assert "0002_bad.sql:3: DROP TABLE" in capsys.readouterr().err
