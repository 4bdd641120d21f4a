"""The stack's TCP ports: defaults, environment overrides, free ports for tests, busy checks."""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from services.common import ports

# Field name -> (environment variable, default port; services/common/ports.py). The order is
# the start-up order.
PORT_ENV: dict[str, tuple[str, int]] = {
    "postgres": ("POSTGRES_PORT", ports.POSTGRES_PORT),
    "redis": ("REDIS_PORT", ports.REDIS_PORT),
    **{s: (f"{s.upper()}_PORT", ports.GRPC_PORTS[s]) for s in ports.SERVICES},
    **{
        f"{s}_metrics": (f"{s.upper()}_METRICS_PORT", ports.METRICS_PORTS[s])
        for s in ports.SERVICES
    },
    "gateway": ("GATEWAY_PORT", ports.GATEWAY_PORT),
    "envoy_admin": ("ENVOY_ADMIN_PORT", ports.ENVOY_ADMIN_PORT),
}


class PortError(ValueError):
    """A port setting is malformed, or a port the stack needs is already taken."""


@dataclass(frozen=True)
class StackPorts:
    """Every port the local stack listens on (all on 127.0.0.1)."""

    gateway: int = ports.GATEWAY_PORT
    envoy_admin: int = ports.ENVOY_ADMIN_PORT
    auth: int = ports.GRPC_PORTS["auth"]
    lattice: int = ports.GRPC_PORTS["lattice"]
    webhook: int = ports.GRPC_PORTS["webhook"]
    auth_metrics: int = ports.METRICS_PORTS["auth"]
    lattice_metrics: int = ports.METRICS_PORTS["lattice"]
    webhook_metrics: int = ports.METRICS_PORTS["webhook"]
    postgres: int = ports.POSTGRES_PORT
    redis: int = ports.REDIS_PORT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackPorts:
        """Defaults, overridden by GATEWAY_PORT, ENVOY_ADMIN_PORT, AUTH_PORT, ... REDIS_PORT."""
        env = os.environ if env is None else env
        values: dict[str, int] = {}
        for field, (var, default) in PORT_ENV.items():
            raw = env.get(var, "").strip()
            if not raw:
                values[field] = default
                continue
            try:
                port = int(raw)
            except ValueError:
                raise PortError(f"{var}={raw!r} is not a port number") from None
            if not 0 < port < 65536:
                raise PortError(f"{var}={port} is outside 1..65535")
            values[field] = port
        ports = cls(**values)
        ports.check_distinct()
        return ports

    @classmethod
    def free(cls) -> StackPorts:
        """Ports the kernel reports free on 127.0.0.1 right now (for test stacks)."""
        names = [f.name for f in dataclasses.fields(cls)]
        sockets = []
        try:
            # Hold every socket open until all are bound, so the ports are pairwise distinct.
            for _ in names:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind(("127.0.0.1", 0))
                sockets.append(sock)
            return cls(**{n: s.getsockname()[1] for n, s in zip(names, sockets, strict=True)})
        finally:
            for sock in sockets:
                sock.close()

    def items(self) -> list[tuple[str, int]]:
        """(field, port) pairs in start-up order."""
        return [(field, getattr(self, field)) for field in PORT_ENV]

    def env_var(self, field: str) -> str:
        """The environment variable that sets this port."""
        return PORT_ENV[field][0]

    def check_distinct(self) -> None:
        """Raise PortError when two settings name the same port."""
        seen: dict[int, str] = {}
        for field, port in self.items():
            if port in seen:
                first, second = PORT_ENV[seen[port]][0], PORT_ENV[field][0]
                raise PortError(f"port {port} is set for both {first} and {second}")
            seen[port] = field

    def check_available(self, fields: list[str] | None = None, host: str = "127.0.0.1") -> None:
        """Raise PortError naming the port and its variable when one is already in use."""
        for field, port in self.items():
            if fields is not None and field not in fields:
                continue
            if not port_is_free(port, host):
                var = self.env_var(field)
                raise PortError(
                    f"port {port} ({field}) is already in use on {host}; "
                    f"stop whatever holds it or choose another port with {var}=..."
                )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (checked by binding it, as the server would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True
