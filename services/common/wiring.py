"""Start-up wiring every service repeats: its database and its access-token verifier."""

from __future__ import annotations

import contextlib

from services.common.access_tokens import AccessTokenVerifier
from services.common.config import ServiceConfig
from services.common.db import Database, open_pool
from services.common.db_metrics import DATABASE_GAUGES
from services.common.grpc_client import insecure_channel
from services.common.jwks_client import grpc_jwks_fetcher


async def open_database(config: ServiceConfig, resources: contextlib.AsyncExitStack) -> Database:
    """The service's connection pool, closed with `resources`; its gauges are exported (under
    the service's name) until then."""
    pool = await open_pool(
        config.database_url,
        min_size=config.db_pool_min,
        max_size=config.db_pool_max,
        name=config.service_name,
        wait_s=config.database_wait_s,
    )
    resources.push_async_callback(pool.close)
    database = Database(pool)
    resources.callback(DATABASE_GAUGES.remove, DATABASE_GAUGES.add(database.snapshot))
    return database


def remote_token_verifier(
    config: ServiceConfig,
    resources: contextlib.AsyncExitStack,
    *,
    issuer: str,
    audience: str,
) -> AccessTokenVerifier:
    """Verifies access tokens against the auth service's JWKS, fetched over gRPC.

    Keys are fetched lazily, on the first token, so the auth service need not be up first.
    """
    channel = insecure_channel(config.auth_addr)
    resources.push_async_callback(channel.close)
    return AccessTokenVerifier(grpc_jwks_fetcher(channel), issuer=issuer, audience=audience)
