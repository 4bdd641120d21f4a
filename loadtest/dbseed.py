"""A PostgreSQL of its own with the schema and a realistic amount of data, for plan checks.

`seeded_server()` starts a private server (devstack.postgres.Postgres, fsync off, in a temporary
directory), applies migrations/, fills it with `sql/seed.sql` as the owner (set-based
`INSERT ... SELECT generate_series`, foreign-key triggers off while loading), then VACUUM
ANALYZE, and yields a `SeededServer`. Used by tests/integration/test_query_plans.py (every hot
query without a sequential scan) and `python -m loadtest rls` (the cost of row-level security).

The server loads auto_explain and pg_stat_statements (both off until asked for): loadtest/plans.py
turns auto_explain on for the services' role and reads the plans from the JSON log.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from devstack.postgres import Postgres
from services.common.migrate import migrate

REPO_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = REPO_ROOT / "migrations"
SEED_SQL = Path(__file__).resolve().parent / "sql" / "seed.sql"
LOG_DIR = "pglog"
LOG_NAME = "postgresql.log"  # jsonlog writes postgresql.json beside it

# The server's settings: fsync off comes from fast=True; a JSON log (one record a line) for
# auto_explain's plans; both extensions loaded but quiet until a session or role turns them on.
SERVER_SETTINGS: Mapping[str, str] = {
    "shared_preload_libraries": "pg_stat_statements,auto_explain",
    "pg_stat_statements.track": "top",
    "pg_stat_statements.track_planning": "on",
    "auto_explain.log_min_duration": "-1",
    "auto_explain.log_format": "json",
    "auto_explain.log_nested_statements": "on",
    "logging_collector": "on",
    "log_destination": "jsonlog",
    "log_directory": LOG_DIR,
    "log_filename": LOG_NAME,
    "log_rotation_age": "0",
    "log_rotation_size": "0",
    # Loading: fewer checkpoints while the seed writes a few hundred MB of WAL; the seeded
    # database (about 850 MB) mostly in PostgreSQL's own cache.
    "max_wal_size": "4GB",
    "maintenance_work_mem": "256MB",
    "shared_buffers": "512MB",
}


@dataclass(frozen=True)
class Scale:
    """Rows per tenant; the defaults give the load suite's floor (tenants x lattices = 100,000,
    tenants x events x webhooks = 1,000,000 deliveries)."""

    tenants: int = 1000
    users_per_tenant: int = 2
    lattices_per_tenant: int = 100
    webhooks_per_tenant: int = 2
    events_per_tenant: int = 500
    outbox_per_tenant: int = 50
    refresh_per_user: int = 10
    keys_per_tenant: int = 3
    revocations_per_tenant: int = 10

    @property
    def deliveries(self) -> int:
        return self.tenants * self.events_per_tenant * self.webhooks_per_tenant

    @property
    def lattices(self) -> int:
        return self.tenants * self.lattices_per_tenant


@dataclass(frozen=True)
class SeededServer:
    """A running seeded server: owner and app-role URLs, its JSON log, how long seeding took."""

    postgres: Postgres
    scale: Scale
    seconds: Mapping[str, float]

    @property
    def admin_url(self) -> str:
        return self.postgres.admin_url

    @property
    def app_url(self) -> str:
        return self.postgres.app_url

    @property
    def json_log(self) -> Path:
        return self.postgres.data_dir / LOG_DIR / LOG_NAME.replace(".log", ".json")

    def row_counts(self) -> dict[str, int]:
        """Estimated rows of every table in public (pg_class.reltuples, after ANALYZE)."""
        with psycopg.connect(self.admin_url) as conn:
            rows = conn.execute(
                "SELECT c.relname, c.reltuples::bigint FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = 'r'"
            ).fetchall()
        return {name: int(count) for name, count in rows}


def seed(admin_url: str, scale: Scale) -> None:
    """Fills a freshly migrated database (as its superuser owner) with `scale`'s rows."""
    with psycopg.connect(admin_url) as conn, conn.transaction():
        for name, value in asdict(scale).items():
            conn.execute("SELECT set_config(%s, %s, true)", (f"seed.{name}", str(value)))
        conn.execute(SEED_SQL.read_text())  # type: ignore[arg-type]  # a file of ours
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def seeded_server(scale: Scale | None = None) -> Iterator[SeededServer]:
    """A private server with migrations applied and `scale` seeded; stopped and deleted after."""
    scale = scale or Scale()
    run_dir = Path(tempfile.mkdtemp(prefix="catalytic-seeded-"))
    run_dir.chmod(0o755)  # PostgreSQL may run as another account (as root: postgres)
    server = Postgres(run_dir, _free_port(), fast=True, settings=SERVER_SETTINGS)
    seconds: dict[str, float] = {}
    try:
        started = time.perf_counter()
        server.start()
        seconds["start"] = time.perf_counter() - started
        started = time.perf_counter()
        migrate(server.admin_url, MIGRATIONS, out=io.StringIO())
        seconds["migrate"] = time.perf_counter() - started
        started = time.perf_counter()
        seed(server.admin_url, scale)
        seconds["seed"] = time.perf_counter() - started
        yield SeededServer(server, scale, seconds)
    finally:
        server.stop()
        if not os.environ.get("KEEP_SEEDED_SERVER"):
            shutil.rmtree(run_dir, ignore_errors=True)
            # A cluster relocated for another account lives outside run_dir.
            if server.data_dir.parent != run_dir:
                shutil.rmtree(server.data_dir.parent, ignore_errors=True)
