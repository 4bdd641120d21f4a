"""A private PostgreSQL server under the run directory: initdb once, start, stop."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import psycopg

from devstack.binaries import postgres_bin_dir
from devstack.procs import Child, ProcessError, log_tail, wait_until

ADMIN_ROLE = "catalytic_admin"
APP_ROLE = "catalytic_app"  # created by the migrations, not here
DATABASE = "catalytic"
# PostgreSQL refuses to run as root; as root we run it as this account (created when missing)
# unless the Debian package's `postgres` account exists.
FALLBACK_USER = "catalytic"
# Where a cluster lives when the server's account cannot enter the run directory.
RELOCATED_ROOT = Path("/var/lib/catalytic-devstack")


def server_user() -> str | None:
    """The account the server runs as: None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_USER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            FALLBACK_USER,
        ],
        check=True,
    )
    return FALLBACK_USER


class ArchiveHook(Protocol):
    """What the server needs from WAL archiving (devstack.backup.Backups)."""

    def prepare(self) -> None: ...

    def postgres_settings(self) -> list[str]: ...


class Postgres:
    """PostgreSQL listening on 127.0.0.1:port with data in <run_dir>/postgres."""

    def __init__(
        self,
        run_dir: Path,
        port: int,
        *,
        fast: bool = False,
        archiving: ArchiveHook | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.port = port
        self.fast = fast
        # Server settings for the command line (`-c name=value`), e.g. the load tests'
        # shared_preload_libraries=pg_stat_statements (loadtest/pgstats.py).
        self.settings = dict(settings or {})
        # WAL archiving (devstack/backup.py): prepared once the data directory's place is
        # known, its settings added to the server's command line.
        self.archiving = archiving
        self.data_dir = run_dir / "postgres"
        self.socket_dir = run_dir / "sock"
        self.log_path = run_dir / "logs" / "postgres.log"
        self.child: Child | None = None

    @property
    def admin_url(self) -> str:
        return f"postgresql://{ADMIN_ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def app_url(self) -> str:
        return f"postgresql://{APP_ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self, timeout: float = 60.0) -> None:
        """initdb when there is no cluster yet, start the server, create the database."""
        bindir = postgres_bin_dir()
        user = server_user()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            if not self._reachable_by(user, self.run_dir):
                self._relocate_for(user)
            shutil.chown(self.socket_dir, user, user)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(bindir, user)
        argv = [
            str(bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-k",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
        ]
        if self.fast:
            # Test clusters are thrown away: trade durability for speed.
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                argv += ["-c", setting]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        if self.archiving is not None:
            self.archiving.prepare()
            for setting in self.archiving.postgres_settings():
                argv += ["-c", setting]
        self.child = Child(
            "postgres",
            argv,
            self.log_path,
            user=user,
            stop_signal=signal.SIGINT,  # fast shutdown
        )
        self.child.start()
        wait_until(self._accepts, what="postgres", timeout=timeout, child=self.child)
        self._create_database()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(grace=30.0)

    def accepts(self) -> bool:
        """Whether a server answers on the port (no exception)."""
        try:
            return self._accepts()
        except psycopg.Error:
            return False

    def _accepts(self) -> bool:
        dsn = f"postgresql://{ADMIN_ROLE}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(dsn, connect_timeout=2):
            return True

    def _create_database(self) -> None:
        dsn = f"postgresql://{ADMIN_ROLE}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if row is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _initdb(self, bindir: Path, user: str | None) -> None:
        # initdb into a scratch directory and rename it, so an interrupted initdb leaves nothing
        # that looks like a cluster.
        scratch = self.data_dir.with_name(self.data_dir.name + ".initdb")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700, parents=True)
        if user is not None:
            shutil.chown(scratch, user, user)
        argv = [
            str(bindir / "initdb"),
            "-D",
            str(scratch),
            "-U",
            ADMIN_ROLE,
            "--auth-local=trust",  # pg_hba: the unix socket and 127.0.0.1/::1 only
            "--auth-host=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ]
        with open(self.log_path, "ab") as log:
            result = subprocess.run(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=user,
                check=False,
                group=pwd.getpwnam(user).pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        if result.returncode != 0:
            raise ProcessError(
                f"initdb failed with status {result.returncode}; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )
        shutil.rmtree(self.data_dir, ignore_errors=True)
        scratch.rename(self.data_dir)

    @staticmethod
    def _reachable_by(user: str, path: Path) -> bool:
        result = subprocess.run(
            ["test", "-x", str(path)],
            user=user,
            check=False,
            group=pwd.getpwnam(user).pw_gid,
            extra_groups=[],
        )
        return result.returncode == 0

    def _relocate_for(self, user: str) -> None:
        """Keeps the cluster where `user` can reach it, linked from the run directory.

        As root, the server runs as an unprivileged account, which cannot enter a run directory
        under a 0700 parent (a clone in /root, say). The data then lives in a directory of its
        own under /var/lib, named after the run directory, and `<run_dir>/postgres` links to it,
        so a second `make up` finds the same data.
        """
        digest = hashlib.sha256(str(self.run_dir.resolve()).encode()).hexdigest()[:16]
        home = RELOCATED_ROOT / digest
        home.mkdir(parents=True, exist_ok=True)
        for directory in (RELOCATED_ROOT, home):
            directory.chmod(0o755)
        link = self.run_dir / "postgres"
        target = home / "postgres"
        if link.is_symlink() and link.resolve() != target:
            link.unlink()
        if not link.exists() and not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
        elif not link.is_symlink():
            raise ProcessError(
                f"{link} holds a cluster that {user!r} cannot reach; move the run directory"
                " somewhere world-searchable (chmod o+x on its parents) or delete it"
            )
        self.data_dir = target
        self.socket_dir = home / "sock"
        self.socket_dir.mkdir(parents=True, exist_ok=True)
