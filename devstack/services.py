"""The three gRPC services as child processes: start, wait for SERVING, stop, crash on purpose."""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.procs import Child, ProcessError, wait_until

# Service name -> the full gRPC service name its health status is published under.
SERVICES: dict[str, str] = {
    "auth": "catalytic.auth.v1.AuthService",
    "lattice": "catalytic.lattice.v1.LatticeService",
    "webhook": "catalytic.webhook.v1.WebhookService",
}


class Services:
    """Runs `python -m services.<name>` for each service with one shared environment."""

    def __init__(
        self, run_dir: Path, env: Mapping[str, str], addrs: Mapping[str, str], cwd: Path
    ) -> None:
        self.children: dict[str, Child] = {
            name: Child(
                name,
                [sys.executable, "-m", f"services.{name}"],
                run_dir / "logs" / f"{name}.log",
                env=env,
                cwd=cwd,
                stop_signal=signal.SIGTERM,
            )
            for name in SERVICES
        }
        self.addrs = dict(addrs)

    def start(self, name: str) -> None:
        self._child(name).start()

    def running(self, name: str) -> bool:
        return self._child(name).running()

    def wait_healthy(self, name: str, timeout: float = 60.0) -> None:
        """Block until the service's gRPC health check says SERVING for its full name."""
        child = self._child(name)
        with grpc.insecure_channel(self.addrs[name]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=SERVICES[name])

            def serving() -> bool:
                reply = stub.Check(request, timeout=1.0)
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

            wait_until(serving, what=name, timeout=timeout, child=child, interval=0.2)

    def stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM (the service drains in-flight calls), SIGKILL after `grace` seconds."""
        self._child(name).stop(grace=grace)

    def set_env(self, name: str, env: Mapping[str, str]) -> None:
        """Sets variables in one service's environment, for its next start."""
        child = self._child(name)
        child.env = {**(child.env or {}), **env}

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would."""
        self._child(name).kill()

    def _child(self, name: str) -> Child:
        try:
            return self.children[name]
        except KeyError:
            raise ProcessError(f"unknown service {name!r}; known: {', '.join(SERVICES)}") from None
