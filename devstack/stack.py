"""The whole local stack as one object: PostgreSQL, Redis, migrations, services, Envoy."""

from __future__ import annotations

import atexit
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType

from devstack.backup import Backups
from devstack.envoy import Envoy
from devstack.ports import StackPorts
from devstack.postgres import Postgres
from devstack.procs import ProcessError, log_tail
from devstack.redis import Redis
from devstack.services import SERVICES, Services
from gateway.render import DEFAULT_DESCRIPTOR, GatewayConfig, parse_origins

REPO_ROOT = Path(__file__).resolve().parent.parent

# Variables the stack decides for its children; the caller's environment never leaks into them.
_OWNED_VARS = frozenset(
    {
        "BIND_HOST",
        "RUN_DIR",
        "DATABASE_URL",
        "DATABASE_ADMIN_URL",
        "REDIS_URL",
        "GATEWAY_URL",
        "GATEWAY_PORT",
        "ENVOY_ADMIN_PORT",
        "POSTGRES_PORT",
        "REDIS_PORT",
    }
    | {
        f"{name.upper()}_{suffix}"
        for name in SERVICES
        for suffix in ("PORT", "METRICS_PORT", "ADDR")
    }
)


class StackError(RuntimeError):
    """The stack could not start (the message says which part and shows its log)."""


class Stack:
    """Starts the real stack as child processes under `run_dir`; stops it in reverse order.

    With database_url / redis_url left as None the stack runs its own PostgreSQL / Redis under
    run_dir; otherwise it uses the given servers and starts none. `postgres_settings` go on its
    own PostgreSQL's command line (`-c name=value`). `gateway_rate_limit_per_s` is the gateway's
    backstop for all requests together (GATEWAY_RATE_LIMIT_PER_S); load tests lift it so that
    what they measure is the stack, not the bucket.
    """

    def __init__(
        self,
        run_dir: Path | str | None = None,
        ports: StackPorts | None = None,
        *,
        fast_postgres: bool = False,
        database_url: str | None = None,
        database_admin_url: str | None = None,
        redis_url: str | None = None,
        gateway_bind: str = "127.0.0.1",
        descriptor: Path = DEFAULT_DESCRIPTOR,
        cors_origins: tuple[str, ...] = (),
        gateway_rate_limit_per_s: int = GatewayConfig.rate_limit_per_s,
        extra_env: Mapping[str, str] | None = None,
        backups: bool = False,
        backup_repo: Path | None = None,
        postgres_settings: Mapping[str, str] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.run_dir = Path(run_dir if run_dir is not None else REPO_ROOT / ".run").resolve()
        self.ports = ports if ports is not None else StackPorts()
        self._log = log
        self.logs_dir = self.run_dir / "logs"

        self.postgres: Postgres | None = None
        if database_url is None:
            self.postgres = Postgres(
                self.run_dir, self.ports.postgres, fast=fast_postgres, settings=postgres_settings
            )
            database_url, database_admin_url = self.postgres.app_url, self.postgres.admin_url
        # pgBackRest: WAL archiving from the first start, a full backup when there is none.
        self.backups: Backups | None = None
        if backups:
            if self.postgres is None:
                raise StackError("backups need the stack's own PostgreSQL (DATABASE_URL is set)")
            self.backups = Backups(self.postgres, repo=backup_repo)
            self.postgres.archiving = self.backups
        self.database_url = database_url
        # Migrations need the owner role; with only an app URL given we try it for both.
        self.database_admin_url = database_admin_url or database_url

        self.redis: Redis | None = None
        if redis_url is None:
            self.redis = Redis(self.run_dir, self.ports.redis)
            redis_url = self.redis.url
        self.redis_url = redis_url

        self._env = self._service_env(extra_env or {})
        self.services = Services(
            self.run_dir,
            self._env,
            {name: self.addr(name) for name in SERVICES},
            cwd=REPO_ROOT,
        )
        self.envoy = Envoy(
            self.run_dir,
            GatewayConfig(
                gateway_port=self.ports.gateway,
                admin_port=self.ports.envoy_admin,
                gateway_bind=gateway_bind,
                auth_addr=self.addr("auth"),
                lattice_addr=self.addr("lattice"),
                webhook_addr=self.addr("webhook"),
                descriptor=descriptor,
                access_log=str(self.logs_dir / "gateway-access.log"),
                # Browser origins allowed by CORS: none unless the caller names them.
                cors_origins=cors_origins,
                rate_limit_per_s=gateway_rate_limit_per_s,
            ),
            base_id=self.ports.gateway,
        )
        self._started = False

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        fast_postgres: bool = False,
        log: Callable[[str], None] = print,
    ) -> Stack:
        """The `make up` stack: ports, RUN_DIR, DATABASE_URL, DATABASE_ADMIN_URL, REDIS_URL,
        GATEWAY_BIND, GATEWAY_DESCRIPTOR, GATEWAY_CORS_ORIGINS and GATEWAY_RATE_LIMIT_PER_S from
        the environment; servers are started only for the URLs left unset."""
        env = os.environ if env is None else env
        rate_limit = env.get("GATEWAY_RATE_LIMIT_PER_S", "").strip()
        if rate_limit and not (rate_limit.isdigit() and int(rate_limit) >= 1):
            raise StackError(f"GATEWAY_RATE_LIMIT_PER_S={rate_limit!r} is not a whole number >= 1")
        return cls(
            run_dir=env.get("RUN_DIR") or None,
            ports=StackPorts.from_env(env),
            fast_postgres=fast_postgres,
            database_url=env.get("DATABASE_URL") or None,
            database_admin_url=env.get("DATABASE_ADMIN_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            backups=env.get("BACKUP", "") not in ("", "0"),
            backup_repo=Path(env["BACKUP_REPO"]) if env.get("BACKUP_REPO") else None,
            gateway_bind=env.get("GATEWAY_BIND") or "127.0.0.1",
            descriptor=Path(env.get("GATEWAY_DESCRIPTOR") or DEFAULT_DESCRIPTOR),
            cors_origins=parse_origins(env.get("GATEWAY_CORS_ORIGINS", "")),
            gateway_rate_limit_per_s=(
                int(rate_limit) if rate_limit else GatewayConfig.rate_limit_per_s
            ),
            log=log,
        )

    def ports_to_check(self) -> list[str]:
        """The ports this stack will listen on (PostgreSQL/Redis only when it runs them)."""
        skip = {"postgres"} if self.postgres is None else set()
        skip |= {"redis"} if self.redis is None else set()
        return [field for field, _ in self.ports.items() if field not in skip]

    # ------------------------------------------------------------------ what clients need
    @property
    def gateway_url(self) -> str:
        return self.envoy.url

    @property
    def env(self) -> dict[str, str]:
        """The services' environment plus GATEWAY_URL: what a client or a test needs."""
        return {**self._env, "GATEWAY_URL": self.gateway_url}

    def addr(self, service: str) -> str:
        """host:port of a service's gRPC server."""
        if service not in SERVICES:
            raise KeyError(f"unknown service {service!r}; known: {', '.join(SERVICES)}")
        port: int = getattr(self.ports, service)
        return f"127.0.0.1:{port}"

    def metrics_url(self, service: str) -> str:
        port: int = getattr(self.ports, f"{service}_metrics")
        return f"http://127.0.0.1:{port}/metrics"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Stack:
        """Start everything in order; on failure stop what was started and raise StackError."""
        if self._started:
            return self
        self._started = True
        atexit.register(self.stop)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.postgres is not None:
                self._timed("postgres", f"127.0.0.1:{self.ports.postgres}", self.postgres.start)
            if self.backups is not None:
                self._timed("backups", "WAL archived", self._start_backups, verb="")
            if self.redis is not None:
                self._timed("redis", f"127.0.0.1:{self.ports.redis}", self.redis.start)
            self._timed("migrations", "applied", self._migrate, verb="")
            self._timed("keys", "webhook secrets sealed", self._seal_secrets, verb="")
            # auth first: the others fetch its signing keys.
            self._timed("auth", self.addr("auth"), partial(self.start_service, "auth"))
            for name in ("lattice", "webhook"):
                self.services.start(name)
            for name in ("lattice", "webhook"):
                self._timed(name, self.addr(name), partial(self.services.wait_healthy, name))
            self._timed("gateway", self.gateway_url, self.envoy.start)
        except Exception as exc:
            self.stop()
            raise StackError(str(exc)) from exc
        except BaseException:  # Ctrl-C while starting: leave nothing behind
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything in reverse order; safe to call twice and from atexit."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        self.envoy.stop()
        for name in reversed(SERVICES):
            self.services.stop(name)
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ one service
    def kill_service(self, name: str) -> None:
        """SIGKILL one service (a crash); the gateway then answers 503 for its routes."""
        self.services.kill(name)

    def stop_service(self, name: str) -> None:
        """Graceful stop of one service (SIGTERM, then SIGKILL after the grace period)."""
        self.services.stop(name)

    def start_service(
        self, name: str, timeout: float = 60.0, *, wait_for_gateway: bool = True
    ) -> None:
        """(Re)start one service and wait until its health check says SERVING and, unless
        `wait_for_gateway` is False, until the gateway routes to it again.

        Envoy's own health checks (every second) and outlier detection (a host that failed
        while down stays ejected for 5 s, longer after repeated ejections) lag behind the
        service: a request through the gateway right after the restart would still get 503
        "no healthy upstream". A test that talks to the service directly and must act at
        once after the restart passes False, and calls wait_for_gateway() before it ends.
        """
        self.services.start(name)
        self.services.wait_healthy(name, timeout=timeout)
        if wait_for_gateway:
            self.wait_for_gateway(timeout)

    def restart_service(self, name: str, env: Mapping[str, str], timeout: float = 60.0) -> None:
        """Stop one service, set variables in its environment (its own only, from now on),
        start it again and wait as start_service does; e.g. DB_POOL_MAX for a pool-size run."""
        self.services.stop(name)
        self.services.set_env(name, env)
        self.start_service(name, timeout)

    def wait_for_gateway(self, timeout: float = 60.0) -> None:
        """Until the gateway (when it runs) routes to every service: its /healthz says 200."""
        if self.envoy.running():
            self.envoy.wait_healthy(timeout=timeout)

    # ------------------------------------------------------------------ helpers
    def _start_backups(self) -> None:
        assert self.backups is not None
        self.backups.create_stanza()
        if not self.backups.sets():
            self.backups.backup("full")

    def _service_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _OWNED_VARS}
        pythonpath = [str(REPO_ROOT), str(REPO_ROOT / "gen" / "python")]
        if env.get("PYTHONPATH"):
            pythonpath.append(env["PYTHONPATH"])
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(pythonpath),
                "PYTHONUNBUFFERED": "1",
                "BIND_HOST": "127.0.0.1",
                "RUN_DIR": str(self.run_dir),
                "DATABASE_URL": self.database_url,
                "DATABASE_ADMIN_URL": self.database_admin_url,
                "REDIS_URL": self.redis_url,
            }
        )
        env.setdefault("WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8")  # receivers on localhost work
        # The services' shared secret for internal RPCs (PublishEvent): random per stack unless
        # the caller pins one (e.g. to call PublishEvent with grpcurl).
        env.setdefault("INTERNAL_TOKEN", secrets.token_urlsafe(32))
        for name in SERVICES:
            upper = name.upper()
            env[f"{upper}_PORT"] = str(getattr(self.ports, name))
            env[f"{upper}_METRICS_PORT"] = str(getattr(self.ports, f"{name}_metrics"))
            env[f"{upper}_ADDR"] = self.addr(name)
        env.update(extra)
        return env

    def _migrate(self) -> None:
        self._run_step("migrations", "migrate.log", "services.common.migrate")

    def _seal_secrets(self) -> None:
        # The webhook service seals secrets under a KEK (ADR 56): a development one is made
        # under RUN_DIR (KEK_DIR) when there is none, and secrets that an older checkout left
        # in plaintext are sealed before the service starts.
        self._run_step(
            "sealing webhook secrets",
            "keys.log",
            "services.webhook.admin",
            "encrypt-secrets",
            "--create-kek-if-none",
        )

    def _run_step(self, what: str, log_name: str, module: str, *args: str) -> None:
        log_path = self.logs_dir / log_name
        with open(log_path, "ab") as log:
            result = subprocess.run(
                [sys.executable, "-m", module, *args],
                env=self._env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        if result.returncode != 0:
            raise ProcessError(
                f"{what} failed with status {result.returncode}; log {log_path}:\n"
                f"{log_tail(log_path)}"
            )

    def _timed(
        self, name: str, where: str, action: Callable[[], None], verb: str = "ready on "
    ) -> None:
        started = time.monotonic()
        action()
        self._log(f"{name:<10} {verb}{where} ({time.monotonic() - started:.1f} s)")
