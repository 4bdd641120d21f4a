"""`python -m devstack up`: run the local stack in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import psycopg

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
    except PortError as exc:
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
    except PortError as exc:
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
    """Wait for a signal; meanwhile say so once when a service dies on its own."""
    reported: set[str] = set()
    while True:
        time.sleep(1.0)
        for name in SERVICES:
            if stack.services.running(name):
                reported.discard(name)
            elif name not in reported:
                reported.add(name)
                log = stack.logs_dir / f"{name}.log"
                print(f"devstack: {name} has exited; see {log}", file=sys.stderr, flush=True)


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
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(with_monitoring=args.monitoring)
    if args.command == "monitor":
        return monitor()
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
