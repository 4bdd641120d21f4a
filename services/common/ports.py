"""Every default port of the mesh, in one table: the services' gRPC and metrics ports, the
gateway's, Envoy's admin, PostgreSQL's and Redis's.

The services' configuration (`ServiceConfig.from_env`), the gateway's renderer, the local
stack (`devstack.ports`) and the Kubernetes renderer read their defaults from here; each may be
overridden by its environment variable (`AUTH_PORT`, `LATTICE_METRICS_PORT`, `GATEWAY_PORT`...,
docs/operations/configuration.md). The Kubernetes manifests, being YAML, repeat the gRPC ports;
tests/deploy checks them against this table.

>>> local_addr("lattice")
'127.0.0.1:50052'
"""

from __future__ import annotations

from typing import Final

SERVICES: Final = ("auth", "lattice", "webhook")
GRPC_PORTS: Final = {"auth": 50051, "lattice": 50052, "webhook": 50053}
METRICS_PORTS: Final = {"auth": 9101, "lattice": 9102, "webhook": 9103}
GATEWAY_PORT: Final = 8080
ENVOY_ADMIN_PORT: Final = 9901
POSTGRES_PORT: Final = 5432
REDIS_PORT: Final = 6379


def local_addr(service: str) -> str:
    """The service's default gRPC address on this machine."""
    return f"127.0.0.1:{GRPC_PORTS[service]}"
