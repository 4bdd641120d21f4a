"""`python -m devstack up`: run the local stack in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import psycopg

from devstack.backup import BackupError, due_backup
from devstack.binaries import MissingBinaryError
from devstack.monitoring import MONITORING_PORT_ENV, Monitoring, MonitoringPorts
from devstack.ports import PORT_ENV, PortError
from devstack.procs import ProcessError
from devstack.services import SERVICES
from devstack.stack import Stack, StackError

_DESCRIPTION = """\
Starts PostgreSQL and Redis (data under RUN_DIR, default .run/) unless DATABASE_URL / REDIS_URL
point elsewhere, applies the migrations, starts the auth, lattice and webhook services and the
Envoy gateway, prints where everything is, and stops it all on Ctrl-C or SIGTERM.
"""
_EPILOG = (
    "ports (environment variable, default): "
    + ", ".join(f"{var} {default}" for var, default in PORT_ENV.values())
    + ". Other variables: RUN_DIR, GATEWAY_BIND, GATEWAY_DESCRIPTOR, GATEWAY_CORS_ORIGINS,"
    + " GATEWAY_RATE_LIMIT_PER_S,"
    + " DATABASE_URL, DATABASE_ADMIN_URL, REDIS_URL."
)


class _Stop(BaseException):
    """Raised from the signal handler to unwind to the clean shutdown (like KeyboardInterrupt)."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # Further signals are ignored so that they cannot interrupt the orderly shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


_MONITOR_DESCRIPTION = """\
Starts Prometheus, Alertmanager and the blackbox, PostgreSQL and Redis exporters (Debian's
packages) next to a running `make up` stack (same RUN_DIR and ports), with their data under
RUN_DIR/monitoring/, prints their URLs, and stops them on Ctrl-C or SIGTERM.
"""
_MONITOR_EPILOG = (
    "ports (environment variable, default): "
    + ", ".join(f"{var} {default}" for var, default in MONITORING_PORT_ENV.values())
    + ". POSTGRES_EXPORTER_DSN replaces the exporter's DSN (default: the stack's database as"
    + " the catalytic_monitor role, created with pg_monitor through DATABASE_ADMIN_URL)."
)


def up(with_monitoring: bool = False) -> int:
    try:
        stack = Stack.from_env()
        stack.ports.check_available(stack.ports_to_check())
        monitoring = _monitoring(stack) if with_monitoring else None
    except (PortError, StackError) as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        stack.start()  # cleans up after itself when it fails or is interrupted
    except _Stop:
        print("\ninterrupted while starting; everything is stopped", flush=True)
        return 0
    except StackError as exc:
        print(f"devstack: the stack did not start: {exc}", file=sys.stderr)
        return 1
    try:
        if monitoring is not None:
            monitoring.start()
        _print_banner(stack)
        if monitoring is not None:
            _print_monitoring(monitoring)
        _watch(stack)
    except _Stop:
        pass
    except (ProcessError, MissingBinaryError, psycopg.Error) as exc:
        print(f"devstack: monitoring did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nstopping ...", flush=True)
        if monitoring is not None:
            monitoring.stop()
        stack.stop()
    print("stopped", flush=True)
    return 0


def monitor() -> int:
    """Monitoring only, next to a stack that `make up` runs (or is about to run)."""
    try:
        monitoring = _monitoring(Stack.from_env())
    except (PortError, StackError) as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        monitoring.start()
        _print_monitoring(monitoring)
        while True:
            time.sleep(3600)
    except _Stop:
        pass
    except (ProcessError, MissingBinaryError, OSError, psycopg.Error) as exc:
        print(f"devstack: monitoring did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        monitoring.stop()
    print("\nmonitoring stopped", flush=True)
    return 0


def _monitoring(stack: Stack) -> Monitoring:
    ports = MonitoringPorts.from_env()
    ports.check_available()
    return Monitoring(stack, ports, postgres_dsn=os.environ.get("POSTGRES_EXPORTER_DSN") or None)


def _print_monitoring(monitoring: Monitoring) -> None:
    urls = monitoring.urls()
    lines = [
        "",
        "Monitoring is up (scrape and evaluation every 15 s):",
        f"  Prometheus:   {urls['prometheus']}/targets  (graph: {urls['prometheus']}/graph)",
        f"  alerts:       {urls['prometheus']}/alerts  and Alertmanager {urls['alertmanager']}",
        f"  notified:     {_short(monitoring.logs_dir)}/alerts.log (every receiver, on loopback)",
        f"  exporters:    blackbox {urls['blackbox']}, postgres {urls['postgres_exporter']},"
        f" redis {urls['redis_exporter']}",
        f"  data:         {_short(monitoring.dir)}/  logs: {_short(monitoring.logs_dir)}/",
        "  dashboards:   `make monitor-snapshot` draws them into docs/monitoring/img/ and lists"
        " the firing alerts",
        "",
    ]
    print("\n".join(lines), flush=True)


def _watch(stack: Stack) -> None:
    """Wait for a signal; meanwhile say so once when a service dies on its own, and take the
    scheduled backups (BACKUP=1)."""
    reported: set[str] = set()
    schedule = BackupSchedule(stack) if stack.backups is not None else None
    while True:
        time.sleep(1.0)
        if schedule is not None:
            schedule.tick()
        for name in SERVICES:
            if stack.services.running(name):
                reported.discard(name)
            elif name not in reported:
                reported.add(name)
                log = stack.logs_dir / f"{name}.log"
                print(f"devstack: {name} has exited; see {log}", file=sys.stderr, flush=True)


class BackupSchedule:
    """BACKUP_INTERVAL_S (3600) between incrementals, BACKUP_FULL_EVERY_S (7 days) between
    fulls; each in a thread of its own so that watching goes on; checked once a minute."""

    def __init__(self, stack: Stack) -> None:
        assert stack.backups is not None
        self.backups = stack.backups
        self.interval_s = float(os.environ.get("BACKUP_INTERVAL_S", "3600"))
        self.full_every_s = float(os.environ.get("BACKUP_FULL_EVERY_S", str(7 * 86400)))
        self._running: threading.Thread | None = None
        self._checked = 0.0

    def tick(self) -> None:
        now = time.time()
        if now - self._checked < 60 or (self._running and self._running.is_alive()):
            return
        self._checked = now
        try:
            kind = due_backup(
                self.backups.sets(),
                now,
                interval_s=self.interval_s,
                full_every_s=self.full_every_s,
            )
        except BackupError as exc:
            print(f"devstack: backup schedule: {exc}", file=sys.stderr, flush=True)
            return
        if kind is not None:
            self._running = threading.Thread(target=self._backup, args=(kind,), daemon=True)
            self._running.start()

    def _backup(self, kind: str) -> None:
        try:
            taken = self.backups.backup(kind)
        except BackupError as exc:
            print(f"devstack: {kind} backup failed: {exc}", file=sys.stderr, flush=True)
            return
        print(
            f"devstack: {kind} backup {taken.label}: {taken.repository_bytes / 1e6:.1f} MB in "
            f"the repository ({taken.stopped - taken.started:.0f} s)",
            flush=True,
        )


def backup_command(action: str, target_time: str | None) -> int:
    """`python -m devstack backup ACTION` against the `make up BACKUP=1` stack's repository."""
    stack = Stack.from_env(dict(os.environ) | {"BACKUP": "1"})
    assert stack.backups is not None
    assert stack.postgres is not None
    if not stack.backups.config.exists():
        print(
            f"devstack: no backup configuration at {stack.backups.config}; start the stack "
            "once with `make up BACKUP=1`",
            file=sys.stderr,
        )
        return 2
    try:
        if action == "info":
            print(stack.backups.run("info"), end="")
        elif action in ("full", "incr"):
            taken = stack.backups.backup(action)
            print(f"{action} backup {taken.label}: {taken.repository_bytes / 1e6:.1f} MB")
        elif action == "verify":
            stack.backups.verify()
            print("verify: every backup file and archived WAL segment checks out")
        else:
            if stack.postgres.accepts():
                print("devstack: PostgreSQL is running; stop the stack first", file=sys.stderr)
                return 2
            took = stack.backups.restore(target_time=target_time)
            print(f"restored in {took:.1f} s; `make up BACKUP=1` replays the WAL and starts")
    except BackupError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_banner(stack: Stack) -> None:
    url = stack.gateway_url
    run_dir = _short(stack.run_dir)
    body = (
        '{"email":"ada@example.com","password":"correct horse battery staple","tenant_name":"acme"}'
    )
    grpc_addrs = ", ".join(f"{name} {stack.addr(name)}" for name in SERVICES)
    metrics = ", ".join(stack.metrics_url(name) for name in SERVICES)
    lines = [
        "",
        f"Catalytic stack is up. Gateway: {url}  (health: {url}/healthz)",
        "",
        "  try it:",
        f"    curl -s -X POST {url}/v1/auth/register -H 'content-type: application/json' \\",
        f"      -d '{body}'",
        f"    curl -s -X POST {url}/v1/auth/login -H 'content-type: application/json' \\",
        """      -d '{"email":"ada@example.com","password":"correct horse battery staple"}'""",
        "",
        f"  gRPC:        {grpc_addrs}",
        f"  metrics:     {metrics}",
        f"  envoy admin: http://127.0.0.1:{stack.ports.envoy_admin}/  (stats, clusters)",
        "  API docs:    docs/api/ and the routes in ARCHITECTURE.md section 3",
        f"  logs:        {run_dir}/logs/  (one file per process; gateway-access.log)",
        f"  data:        {run_dir}/  (kept between runs; `make clean-data` removes it)",
        *(
            [
                f"  backups:     pgBackRest, repository {_short(stack.backups.repo)} (WAL"
                " archived every segment or 15 s; `python -m devstack backup info`)"
            ]
            if stack.backups is not None
            else []
        ),
        "",
        "Press Ctrl-C to stop everything.",
    ]
    print("\n".join(lines), flush=True)


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="Run the Catalytic stack locally as child processes.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up_parser = commands.add_parser(
        "up",
        help="start everything and wait; Ctrl-C stops it all",
        description=_DESCRIPTION,
        epilog=_EPILOG,
    )
    up_parser.add_argument(
        "--monitoring",
        action="store_true",
        help="also start Prometheus, Alertmanager and the exporters (as `monitor` does)",
    )
    commands.add_parser(
        "monitor",
        help="start the monitoring processes next to a running stack; Ctrl-C stops them",
        description=_MONITOR_DESCRIPTION,
        epilog=_MONITOR_EPILOG,
    )
    backup_parser = commands.add_parser(
        "backup",
        help="the backups of a `make up BACKUP=1` stack: info, a backup now, verify",
        description="pgBackRest on the stack's repository (RUN_DIR, default .run/). `restore` "
        "needs the stack stopped; docs/operations/backup-procedures.md.",
    )
    backup_parser.add_argument(
        "action",
        choices=("info", "full", "incr", "verify", "restore"),
        help="info: the backups and the WAL archive; full/incr: take one now; verify: every "
        "file against its checksum; restore: into the stopped stack's data directory",
    )
    backup_parser.add_argument(
        "--target-time",
        default=None,
        help="restore: to this moment (e.g. '2026-12-05 07:00:00+00') instead of the latest",
    )
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(with_monitoring=args.monitoring)
    if args.command == "monitor":
        return monitor()
    if args.command == "backup":
        return backup_command(args.action, args.target_time)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
