"""Prometheus, Alertmanager and the exporters as child processes next to a local stack.

The programs are Debian's (`scripts/install-system-deps.sh --monitoring`); their configuration
is rendered by deploy/monitoring/config.py from the stack's ports, and their data lives under
<run_dir>/monitoring/. Used by `make monitor` / `make up MONITORING=1` and the live test.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

from deploy.monitoring.config import (
    DEFAULT_RULES,
    PRODUCTION,
    RULES_DIR,
    Intervals,
    RuleFiles,
    Targets,
    blackbox_config,
    local_alertmanager_settings,
    local_alertmanager_yaml,
    prometheus_config,
    shortened_rules,
    write_yaml,
)
from devstack.binaries import INSTALL_HINT, MissingBinaryError
from devstack.ports import PortError, port_is_free
from devstack.procs import Child, ProcessError, wait_until
from devstack.services import SERVICES
from devstack.stack import Stack

MONITOR_ROLE = "catalytic_monitor"
MONITOR_ROLE_SQL = RULES_DIR.parent / "postgres_monitor_role.sql"

# Field -> (environment variable, default port): the upstream projects' customary ports.
MONITORING_PORT_ENV: dict[str, tuple[str, int]] = {
    "prometheus": ("PROMETHEUS_PORT", 9090),
    "alertmanager": ("ALERTMANAGER_PORT", 9093),
    "blackbox": ("BLACKBOX_PORT", 9115),
    "postgres_exporter": ("POSTGRES_EXPORTER_PORT", 9187),
    "redis_exporter": ("REDIS_EXPORTER_PORT", 9121),
}

# Program -> the Debian package that installs it as /usr/bin/<program>.
PROGRAMS: dict[str, str] = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    "prometheus-redis-exporter": "prometheus-redis-exporter",
}


@dataclass(frozen=True)
class MonitoringPorts:
    """The ports of the monitoring processes (all on 127.0.0.1)."""

    prometheus: int = 9090
    alertmanager: int = 9093
    blackbox: int = 9115
    postgres_exporter: int = 9187
    redis_exporter: int = 9121

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MonitoringPorts:
        """Defaults, overridden by PROMETHEUS_PORT, ALERTMANAGER_PORT, BLACKBOX_PORT, ..."""
        env = os.environ if env is None else env
        values: dict[str, int] = {}
        for name, (var, default) in MONITORING_PORT_ENV.items():
            raw = env.get(var, "").strip()
            try:
                values[name] = int(raw) if raw else default
            except ValueError:
                raise PortError(f"{var}={raw!r} is not a port number") from None
        return cls(**values)

    @classmethod
    def free(cls) -> MonitoringPorts:
        """Ports free on 127.0.0.1 right now, pairwise distinct (for tests)."""
        sockets = []
        try:
            for _ in MONITORING_PORT_ENV:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind(("127.0.0.1", 0))
                sockets.append(sock)
            ports = [sock.getsockname()[1] for sock in sockets]
            return cls(**dict(zip(MONITORING_PORT_ENV, ports, strict=True)))
        finally:
            for sock in sockets:
                sock.close()

    def check_available(self) -> None:
        """Raise PortError naming the port and its variable when one is already in use."""
        for field in dataclasses.fields(self):
            port = getattr(self, field.name)
            if not port_is_free(port):
                var = MONITORING_PORT_ENV[field.name][0]
                raise PortError(
                    f"port {port} ({field.name}) is already in use on 127.0.0.1; "
                    f"stop whatever holds it or choose another port with {var}=..."
                )


def program(name: str) -> Path:
    """/usr/bin/<name> from its Debian package, or say how to install it."""
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None
    )
    if found is None:
        raise MissingBinaryError(
            f"{name} is not installed (Debian package {PROGRAMS.get(name, name)}); run "
            f"`make system-deps MONITORING=1` (or scripts/install-system-deps.sh --monitoring)"
            f" — {INSTALL_HINT}"
        )
    return Path(found)


class AlertSink:
    """Alertmanager's receivers of a local run (webhook, PagerDuty, Slack) on 127.0.0.1: answers
    200 to every POST and appends one line per notification to `log_path` (alerts.log)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    summary = _notification_summary(json.loads(body))
                except (ValueError, AttributeError, TypeError):
                    summary = f"{len(body)} bytes"
                line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.path} {summary}\n"
                with lock, log_path.open("a") as log:
                    log.write(line)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _notification_summary(body: dict[str, object]) -> str:
    """`firing ServiceDown{service=webhook}, ...` for an Alertmanager webhook notification, the
    event action and summary for PagerDuty, the title for Slack."""
    alerts = body.get("alerts")
    if isinstance(alerts, list):
        return ", ".join(
            f"{a['status']} {a['labels'].get('alertname')}{{service={a['labels'].get('service')}}}"
            for a in alerts
        )
    if "event_action" in body:
        payload = body.get("payload")
        summary = payload.get("summary") if isinstance(payload, dict) else None
        return f"{body['event_action']} {summary}"
    attachments = body.get("attachments")
    if isinstance(attachments, list) and attachments and isinstance(attachments[0], dict):
        return str(attachments[0].get("title"))
    return "?"


class Monitoring:
    """Starts the exporters, Alertmanager and Prometheus for `stack`; stops them in reverse.

    `stack` need not be started by us: `make monitor` builds a Stack from the same environment
    as the running `make up` and only reads its ports and URLs.
    """

    def __init__(
        self,
        stack: Stack,
        ports: MonitoringPorts | None = None,
        *,
        intervals: Intervals = PRODUCTION,
        alert_webhook: str | None = None,
        alert_sink: str | None = None,
        drill: bool = False,
        rules: RuleFiles = DEFAULT_RULES,
        postgres_dsn: str | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.stack = stack
        self.ports = ports if ports is not None else MonitoringPorts()
        self.intervals = intervals
        self.alert_webhook = alert_webhook
        self.alert_sink = alert_sink
        self._own_sink: AlertSink | None = None
        self.drill = drill
        self.rules = rules
        self._postgres_dsn = postgres_dsn
        self._log = log
        self.dir = stack.run_dir / "monitoring"
        self.logs_dir = stack.logs_dir
        self.children: dict[str, Child] = {}
        self._started = False

    # ------------------------------------------------------------------ addresses
    def addr(self, name: str) -> str:
        port: int = getattr(self.ports, name)
        return f"127.0.0.1:{port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.addr('prometheus')}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.addr('alertmanager')}"

    def urls(self) -> dict[str, str]:
        """Every process's URL, for the banner."""
        return {name: f"http://{self.addr(name)}" for name in MONITORING_PORT_ENV}

    def targets(self) -> Targets:
        stack = self.stack
        return Targets(
            metrics={
                name: f"127.0.0.1:{getattr(stack.ports, f'{name}_metrics')}" for name in SERVICES
            },
            grpc={name: stack.addr(name) for name in SERVICES},
            envoy_admin=f"127.0.0.1:{stack.ports.envoy_admin}",
            postgres_exporter=self.addr("postgres_exporter"),
            redis_exporter=self.addr("redis_exporter"),
            blackbox=self.addr("blackbox"),
            alertmanager=self.addr("alertmanager"),
            prometheus=self.addr("prometheus"),
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Monitoring:
        """Render the configuration and start everything; on failure stop what started."""
        if self._started:
            return self
        self._started = True
        atexit.register(self.stop)
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_blackbox()
            self._start_postgres_exporter()
            self._start_redis_exporter()
            self._start_alertmanager()
            self._start_prometheus()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything in reverse order; safe to call twice and from atexit."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        for child in reversed(list(self.children.values())):
            child.stop(grace=10.0)
        self.children.clear()
        if self._own_sink is not None:
            self._own_sink.close()
            self._own_sink = None

    def __enter__(self) -> Monitoring:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ the processes
    def _start_blackbox(self) -> None:
        path = self.dir / "blackbox.yml"
        write_yaml(path, blackbox_config(SERVICES))
        self._run(
            "blackbox",
            [
                str(program("prometheus-blackbox-exporter")),
                f"--config.file={path}",
                f"--web.listen-address={self.addr('blackbox')}",
            ],
            ready="/-/healthy",
        )

    def _start_postgres_exporter(self) -> None:
        env = {**os.environ, "DATA_SOURCE_NAME": self.postgres_dsn()}
        self._run(
            "postgres_exporter",
            [
                str(program("prometheus-postgres-exporter")),
                f"--web.listen-address={self.addr('postgres_exporter')}",
            ],
            ready="/metrics",
            env=env,
        )

    def _start_redis_exporter(self) -> None:
        redis = urlsplit(self.stack.redis_url)
        self._run(
            "redis_exporter",
            [
                str(program("prometheus-redis-exporter")),
                f"--redis.addr=redis://{redis.hostname}:{redis.port or 6379}",
                f"--web.listen-address={self.addr('redis_exporter')}",
            ],
            ready="/metrics",
        )

    def _start_alertmanager(self) -> None:
        # The production template (deploy/monitoring/render.py), every receiver on loopback:
        # the caller's sink, or our own that logs each notification to logs/alerts.log.
        sink = self.alert_sink
        if sink is None:
            self._own_sink = AlertSink(self.logs_dir / "alerts.log")
            sink = self._own_sink.url
        settings = local_alertmanager_settings(self.dir / "secrets", sink, self.alert_webhook)
        path = self.dir / "alertmanager.yml"
        path.write_text(local_alertmanager_yaml(settings, fast=self.drill))
        self._run(
            "alertmanager",
            [
                str(program("prometheus-alertmanager")),
                f"--config.file={path}",
                f"--storage.path={self.dir / 'alertmanager'}",
                f"--web.listen-address={self.addr('alertmanager')}",
                "--cluster.listen-address=",  # one instance: no gossip port
            ],
            ready="/-/ready",
        )

    def _start_prometheus(self) -> None:
        rules = self.rules
        if self.drill:
            # Alerts that wait minutes before firing in production fire within seconds here.
            copies = shortened_rules(
                rules.files(),
                self.dir / "rules",
                max_for_s=2 * self.intervals.evaluation_s,
                max_interval_s=self.intervals.evaluation_s,
            )
            rules = RuleFiles([str(path) for path in copies])
        path = self.dir / "prometheus.yml"
        write_yaml(path, prometheus_config(self.targets(), self.intervals, rules))
        self._run(
            "prometheus",
            [
                str(program("prometheus")),
                f"--config.file={path}",
                f"--storage.tsdb.path={self.dir / 'prometheus'}",
                f"--web.listen-address={self.addr('prometheus')}",
                "--storage.tsdb.retention.time=7d",
            ],
            ready="/-/ready",
        )

    def postgres_dsn(self) -> str:
        """The exporter's DSN: POSTGRES_EXPORTER_DSN if given, else the stack's database as the
        pg_monitor role, created first through the admin URL (postgres_monitor_role.sql)."""
        if self._postgres_dsn:
            return self._postgres_dsn
        admin = self.stack.database_admin_url
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(MONITOR_ROLE_SQL.read_text())
        parts = urlsplit(admin)
        host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        return urlunsplit(
            (parts.scheme, f"{MONITOR_ROLE}@{host}", parts.path, "sslmode=disable", "")
        )

    def _run(
        self,
        name: str,
        argv: list[str],
        *,
        ready: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        child = Child(name, argv, self.logs_dir / f"{name}.log", env=env, cwd=self.dir)
        self.children[name] = child
        child.start()
        url = f"http://{self.addr(name)}{ready}"

        def answers() -> bool:
            return httpx.get(url, timeout=1.0, trust_env=False).status_code == 200

        wait_until(answers, what=name, timeout=timeout, child=child, interval=0.1)
        self._log(f"{name:<17} ready on {url.removesuffix(ready)}")


__all__ = ["MissingBinaryError", "Monitoring", "MonitoringPorts", "ProcessError"]
