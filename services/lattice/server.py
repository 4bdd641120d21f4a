"""Builds the lattice service: store, domain, servicer, token verification, server."""

from __future__ import annotations

import contextlib

import grpc
from catalytic.lattice.v1 import lattice_service_pb2_grpc as pb_grpc

from services.common.access_tokens import AccessTokenVerifier
from services.common.api_keys import ApiKeyVerifier
from services.common.cache import open_redis
from services.common.config import ServiceConfig
from services.common.denylist import Denylist
from services.common.interceptors.auth import AuthInterceptor
from services.common.interceptors.ratelimit import RateLimitInterceptor, rate_limit_interceptor
from services.common.ratelimit import PostgresPlanSource, RateLimiter
from services.common.server import RunningService, build_server
from services.common.wiring import open_database, remote_token_verifier
from services.lattice.catalog import Catalog
from services.lattice.config import LatticeConfig
from services.lattice.engine.field import BYTES_PER_VERTEX
from services.lattice.servicer import LatticeServicer
from services.lattice.shapes import MAX_VERTICES
from services.lattice.store import PostgresLatticeStore

SERVICE_NAME = "catalytic.lattice.v1.LatticeService"
# Every lattice RPC acts for a tenant, so none is public.
PUBLIC_METHODS: frozenset[str] = frozenset()
# A `values` fill of the largest lattice is 64 MiB; the rest of a request is tiny.
MAX_MESSAGE_BYTES = MAX_VERTICES * BYTES_PER_VERTEX + 1024 * 1024


async def create_server(config: LatticeConfig) -> RunningService:
    """Starts the lattice gRPC server (NOT_SERVING until the caller marks it ready)."""
    resources = contextlib.AsyncExitStack()
    try:
        database = await open_database(config.service, resources)
        redis = await open_redis(config.service.redis_url)
        resources.push_async_callback(redis.aclose)
        denylist = Denylist(redis)
        verifier = remote_token_verifier(
            config.service, resources, issuer=config.issuer, audience=config.audience
        )
        catalog = Catalog(PostgresLatticeStore(database))
        return await start_server(
            config.service,
            catalog,
            verifier,
            resources=resources,
            denylist=denylist,
            api_keys=ApiKeyVerifier(database),
            rate_limit=rate_limit_interceptor(
                config.service.service_name,
                RateLimiter(redis),
                PostgresPlanSource(database),
                config.rate_limits,
            ),
        )
    except BaseException:
        await resources.aclose()
        raise


async def start_server(
    config: ServiceConfig,
    catalog: Catalog,
    verifier: AccessTokenVerifier,
    *,
    resources: contextlib.AsyncExitStack | None = None,
    denylist: Denylist | None = None,
    api_keys: ApiKeyVerifier | None = None,
    rate_limit: RateLimitInterceptor | None = None,
) -> RunningService:
    """The server around a ready Catalog; unit tests call this with a fake store.

    create_server always passes `denylist` and `api_keys` (see AuthInterceptor), and
    `rate_limit` (the per-tenant limits, which need Redis and PostgreSQL).
    """
    servicer = LatticeServicer(catalog)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_LatticeServiceServicer_to_server(servicer, server)

    return await build_server(
        config,
        service_names=[SERVICE_NAME],
        register=register,
        resources=resources,
        auth_interceptor=AuthInterceptor(
            verifier, public_methods=PUBLIC_METHODS, denylist=denylist, api_keys=api_keys
        ),
        rate_limit_interceptor=rate_limit,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )
