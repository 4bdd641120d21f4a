"""Applies the ordered SQL files in migrations/ to PostgreSQL, each exactly once, under a lock.

Usage: python -m services.common.migrate [--dir migrations] [--dry-run] [--status]
       python -m services.common.migrate --wait-for-current [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

import psycopg

from services.common.config import redact_url

FILENAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9][a-z0-9_]*)\.sql")
# Any fixed 64-bit number works; all runners must agree on it, nothing else may use it.
LOCK_KEY = 7_206_331_214_613_551_104

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The migrations on disk or in the database are not in a state that is safe to apply."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: `0002_lattices.sql` is version 2."""

    version: int
    filename: str
    sql: bytes
    checksum: str


@dataclass(frozen=True, slots=True)
class Applied:
    """A row of schema_migrations."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


# The repository's migrations/, wherever the command is run from.
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "migrations"


def checksum(sql: bytes) -> str:
    """SHA-256 of the file with line endings normalised, so a CRLF checkout is not a change."""
    return hashlib.sha256(sql.replace(b"\r\n", b"\n")).hexdigest()


def discover(directory: Path) -> list[Migration]:
    """Every `NNNN_name.sql` in `directory`, by version; other file kinds (README) are ignored."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    by_version: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = FILENAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name}: migration files must be named NNNN_lowercase_words.sql"
            )
        version = int(match["version"])
        if version in by_version:
            raise MigrationError(
                f"{by_version[version].filename} and {path.name} share version {version:04d}"
            )
        sql = path.read_bytes()
        by_version[version] = Migration(version, path.name, sql, checksum(sql))
    return [by_version[v] for v in sorted(by_version)]


def pending(migrations: Sequence[Migration], applied: Mapping[int, Applied]) -> list[Migration]:
    """The migrations still to apply, in order; MigrationError if an applied file changed."""
    for migration in migrations:
        done = applied.get(migration.version)
        if done is not None and done.checksum != migration.checksum:
            raise MigrationError(
                f"{migration.filename} changed after it was applied on "
                f"{done.applied_at:%Y-%m-%d %H:%M} (checksum {done.checksum[:12]} in the "
                f"database, {migration.checksum[:12]} on disk); applied migrations are never "
                "edited: restore the file and write a new migration instead"
            )
    return [m for m in migrations if m.version not in applied]


def status_lines(migrations: Sequence[Migration], applied: Mapping[int, Applied]) -> list[str]:
    """One line per migration on disk or in the database, saying where it stands."""
    on_disk = {m.version: m for m in migrations}
    lines = []
    for version in sorted(on_disk.keys() | applied.keys()):
        migration, done = on_disk.get(version), applied.get(version)
        if migration is None and done is not None:
            lines.append(f"{version:04d}_{done.name}.sql  applied, but no such file here")
        elif migration is not None and done is None:
            lines.append(f"{migration.filename}  pending")
        elif migration is not None and done is not None:
            state = "applied" if done.checksum == migration.checksum else "CHANGED since applied"
            lines.append(f"{migration.filename}  {state} {done.applied_at:%Y-%m-%d %H:%M:%S}")
    return lines


def _read_applied(conn: psycopg.Connection[tuple[int, str, str, datetime]]) -> dict[int, Applied]:
    rows = conn.execute("SELECT version, name, checksum, applied_at FROM schema_migrations")
    return {row[0]: Applied(*row) for row in rows}


def migrate(url: str, directory: Path, *, dry_run: bool = False, out: TextIO = sys.stdout) -> int:
    """Applies what is pending; returns how many files were (or, dry, would be) applied."""
    migrations = discover(directory)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        # Session-level lock: a second runner waits here, then finds nothing left to do.
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute(_CREATE_TABLE)
            todo = pending(migrations, _read_applied(conn))
            if not todo:
                print("up to date", file=out)
                return 0
            for migration in todo:
                if dry_run:
                    print(f"would apply {migration.filename}", file=out)
                    continue
                print(f"applying {migration.filename} ... ", end="", file=out, flush=True)
                start = time.perf_counter()
                try:
                    with conn.transaction():
                        # No parameters: psycopg sends the text as one simple query, so files
                        # may hold many statements and $$ function bodies.
                        conn.execute(migration.sql)
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum)"
                            " VALUES (%s, %s, %s)",
                            (migration.version, migration.filename[5:-4], migration.checksum),
                        )
                except psycopg.Error as exc:
                    print("FAILED", file=out, flush=True)
                    raise MigrationError(
                        f"{migration.filename} failed, nothing of it was applied: {exc}"
                    ) from exc
                print(f"ok ({(time.perf_counter() - start) * 1000:.0f} ms)", file=out, flush=True)
            return len(todo)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def status(url: str, directory: Path, *, out: TextIO = sys.stdout) -> bool:
    """Prints every migration's state; False when an applied file was changed."""
    migrations = discover(directory)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        applied = _read_applied(conn) if exists and exists[0] else {}
    lines = status_lines(migrations, applied)
    for line in lines:
        print(line, file=out)
    return not any("CHANGED" in line for line in lines)


def read_applied(url: str) -> dict[int, Applied]:
    """schema_migrations' rows; empty before the first migration ran."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        return _read_applied(conn) if exists and exists[0] else {}


def wait_for_current(
    read: Callable[[], Mapping[int, Applied]],
    directory: Path,
    *,
    timeout_s: float,
    interval_s: float = 2.0,
    out: TextIO = sys.stdout,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Returns once every migration in `directory` is applied (a Kubernetes initContainer runs
    this, so a service starts only on the schema its code needs); MigrationError after
    `timeout_s`, or at once when an applied file differs from the one here.

    Versions applied but unknown here are fine: after `kubectl rollout undo` the older release
    runs on the newer schema, as it does during any rolling update."""
    migrations = discover(directory)
    deadline = clock() + timeout_s
    while True:
        try:
            todo = pending(migrations, read())
        except psycopg.OperationalError as exc:
            todo, reason = migrations, f"database not reachable: {exc}".strip()
        except psycopg.errors.InsufficientPrivilege:
            # The application role may read schema_migrations from 0009 on, which is pending.
            todo, reason = migrations, "schema_migrations not readable yet (granted by 0009)"
        else:
            reason = "waiting for " + ", ".join(m.filename for m in todo)
        if not todo:
            print("schema is current", file=out, flush=True)
            return
        if clock() >= deadline:
            raise MigrationError(f"schema not current after {timeout_s:g} s: {reason}")
        print(reason, file=out, flush=True)
        sleep(interval_s)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit status 0 on success, 1 on a migration problem, 2 on usage."""
    parser = argparse.ArgumentParser(prog="python -m services.common.migrate", description=__doc__)
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"SQL files (default: {DEFAULT_DIR})"
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be applied")
    parser.add_argument("--status", action="store_true", help="show each migration's state")
    parser.add_argument(
        "--wait-for-current",
        action="store_true",
        help="apply nothing; wait until every migration here is applied (exit 1 on timeout)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds --wait-for-current waits (600)"
    )
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_ADMIN_URL") or os.environ.get("DATABASE_URL")
    if not url:
        print("migrate: set DATABASE_ADMIN_URL (or DATABASE_URL)", file=sys.stderr)
        return 2
    try:
        if args.status:
            return 0 if status(url, args.dir) else 1
        if args.wait_for_current:
            wait_for_current(lambda: read_applied(url), args.dir, timeout_s=args.timeout)
            return 0
        migrate(url, args.dir, dry_run=args.dry_run)
    except MigrationError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"migrate: cannot use the database at {redact_url(url)}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
