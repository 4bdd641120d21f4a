"""PostgreSQL backups with pgBackRest: WAL archiving, base backups, verification, restores.

One stanza (`catalytic`) and one repository, encrypted at rest (aes-256-cbc, the passphrase in a
0600 file next to the configuration: back it up apart from the repository), with a retention of
two full backups (and the WAL that they need). The repository is a directory: local by default
(`<run dir>/backup/repo`), anywhere with BACKUP_REPO (a mounted off-site volume); pgBackRest's
S3/GCS/Azure/SFTP repositories are configured the same way in production
(docs/operations/backup-procedures.md).

PostgreSQL archives each WAL segment with `pgbackrest archive-push` and switches segments at
least every `archive_timeout_s` (15 s): the recovery point objective when the server and its
disk are lost together. The server runs as an unprivileged account when we are root, so every
path pgBackRest writes is owned by that account.
"""

from __future__ import annotations

import json
import pwd
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.postgres import ADMIN_ROLE, Postgres, server_user
from devstack.procs import ProcessError

STANZA = "catalytic"
DEFAULT_ARCHIVE_TIMEOUT_S = 15


class BackupError(ProcessError):
    """A pgBackRest command failed; the message holds its output."""


def pgbackrest_binary() -> str:
    found = shutil.which("pgbackrest")
    if found is None:
        raise BackupError("pgbackrest is not installed: run `make system-deps`")
    return found


@dataclass(frozen=True)
class BackupSet:
    """One backup in the repository, as `pgbackrest info` reports it."""

    label: str
    kind: str
    started: float
    stopped: float
    database_bytes: int
    repository_bytes: int


def due_backup(
    sets: list[BackupSet], now: float, *, interval_s: float, full_every_s: float
) -> str | None:
    """Which backup the schedule wants now: `full` when there is none or the newest full is
    `full_every_s` old, `incr` when the newest backup is `interval_s` old, else None."""
    fulls = [s.stopped for s in sets if s.kind == "full"]
    if not fulls or now - max(fulls) >= full_every_s:
        return "full"
    if now - max(s.stopped for s in sets) >= interval_s:
        return "incr"
    return None


class Backups:
    """pgBackRest for one devstack PostgreSQL (its data directory, port and socket)."""

    def __init__(
        self,
        postgres: Postgres,
        *,
        repo: Path | None = None,
        archive_timeout_s: int = DEFAULT_ARCHIVE_TIMEOUT_S,
        process_max: int = 2,
    ) -> None:
        self.postgres = postgres
        self._repo = repo
        self.archive_timeout_s = archive_timeout_s
        self.process_max = process_max
        self.user = server_user()

    # ------------------------------------------------------------------ where
    # Next to the data directory, which Postgres.start may relocate where the server's account
    # can reach it: so these are read after start-up has decided.
    @property
    def home(self) -> Path:
        return self.postgres.data_dir.resolve().parent / "backup"

    @property
    def repo(self) -> Path:
        return self._repo or self.home / "repo"

    @property
    def config(self) -> Path:
        return self.home / "pgbackrest.conf"

    @property
    def cipher_file(self) -> Path:
        return self.home / "repo-cipher-pass"

    # ------------------------------------------------------------------ set-up
    def postgres_settings(self) -> list[str]:
        """`-c` settings for the server: archive every WAL segment into the repository."""
        command = f"{pgbackrest_binary()} --config={self.config} --stanza={STANZA} archive-push %p"
        return [
            "wal_level=replica",
            "archive_mode=on",
            f"archive_command={command}",
            f"archive_timeout={self.archive_timeout_s}",
        ]

    def prepare(self) -> None:
        """The configuration, the passphrase (made once) and the directories, owned by the
        server's account. Call before the server starts (archive-push reads the config)."""
        for directory in (
            self.home,
            self.repo,
            self.home / "log",
            self.home / "lock",
            self.home / "spool",
        ):
            directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._own(directory)
        if not self.cipher_file.exists():
            self.cipher_file.write_text(secrets.token_urlsafe(48))
        self.cipher_file.chmod(0o600)
        self._own(self.cipher_file)
        pg = self.postgres
        lines = [
            "[global]",
            f"repo1-path={self.repo}",
            "repo1-cipher-type=aes-256-cbc",
            f"repo1-cipher-pass={self.cipher_file.read_text().strip()}",
            "repo1-retention-full=2",
            "compress-type=zst",
            f"process-max={self.process_max}",
            f"log-path={self.home / 'log'}",
            f"lock-path={self.home / 'lock'}",
            f"spool-path={self.home / 'spool'}",
            "log-level-console=warn",
            "log-level-file=info",
            "start-fast=y",
            "archive-async=n",
            "",
            f"[{STANZA}]",
            f"pg1-path={pg.data_dir}",
            f"pg1-port={pg.port}",
            f"pg1-socket-path={pg.socket_dir}",
            f"pg1-user={ADMIN_ROLE}",
            "",
        ]
        self.config.write_text("\n".join(lines))
        self.config.chmod(0o600)
        self._own(self.config)

    def create_stanza(self) -> None:
        """Once per repository (idempotent), then `check`: an archived WAL segment proves the
        archive_command works end to end."""
        self.run("stanza-create")
        self.run("check")

    # ------------------------------------------------------------------ operations
    def backup(self, kind: str = "full") -> BackupSet:
        """A base backup (`full`, `diff` or `incr`) of the running server; the newest set."""
        self.run("backup", f"--type={kind}")
        return self.sets()[-1]

    def verify(self) -> str:
        """`pgbackrest verify`: every file of every backup and archived WAL against its checksum."""
        return self.run("verify", "--log-level-console=info")

    def info(self) -> dict[str, Any]:
        out = self.run("info", "--output=json")
        stanzas: list[dict[str, Any]] = json.loads(out)
        return stanzas[0]

    def sets(self) -> list[BackupSet]:
        return [
            BackupSet(
                label=b["label"],
                kind=b["type"],
                started=float(b["timestamp"]["start"]),
                stopped=float(b["timestamp"]["stop"]),
                database_bytes=int(b["info"]["size"]),
                repository_bytes=int(b["info"]["repository"]["size"]),
            )
            for b in self.info().get("backup", [])
        ]

    def restore(self, *, target_time: str | None = None) -> float:
        """Restores into the (stopped, possibly deleted) data directory; seconds it took.

        Without `target_time`: to the end of the archived WAL (the latest point). With it
        (`2026-12-05 07:00:00.123+00`): to that moment, then promote. Recovery itself happens
        when PostgreSQL next starts (pgBackRest writes restore_command and the target).
        """
        data = self.postgres.data_dir
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(mode=0o700, parents=True)
        self._own(data)
        args = ["restore"]
        if target_time is not None:
            args += ["--type=time", f"--target={target_time}", "--target-action=promote"]
        start = time.monotonic()
        self.run(*args)
        return time.monotonic() - start

    def run(self, *args: str) -> str:
        """`pgbackrest --config=... --stanza=catalytic <args>` as the server's account."""
        argv = [pgbackrest_binary(), f"--config={self.config}", f"--stanza={STANZA}", *args]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            user=self.user,
            group=pwd.getpwnam(self.user).pw_gid if self.user else None,
            extra_groups=[] if self.user else None,
            cwd="/",
        )
        if result.returncode != 0:
            raise BackupError(
                f"pgbackrest {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        return result.stdout

    def _own(self, path: Path) -> None:
        if self.user is not None:
            shutil.chown(path, self.user, self.user)
