"""Builds the webhook service: store, resolver, domain, servicer, token verification, server."""

from __future__ import annotations

import contextlib

import grpc
from catalytic.webhook.v1 import webhook_service_pb2_grpc as pb_grpc

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
from services.webhook.config import WebhookConfig
from services.webhook.endpoints import Endpoints
from services.webhook.servicer import WebhookServicer
from services.webhook.ssrf import SystemResolver
from services.webhook.store import PostgresWebhookStore

SERVICE_NAME = "catalytic.webhook.v1.WebhookService"
# Every webhook RPC acts for a tenant (PublishEvent for a calling service), so none is public.
PUBLIC_METHODS: frozenset[str] = frozenset()


async def create_server(config: WebhookConfig) -> RunningService:
    """Starts the webhook gRPC server (NOT_SERVING until the caller marks it ready)."""
    resources = contextlib.AsyncExitStack()
    try:
        database = await open_database(config.service, resources)
        redis = await open_redis(config.service.redis_url)
        resources.push_async_callback(redis.aclose)
        denylist = Denylist(redis)
        verifier = remote_token_verifier(
            config.service, resources, issuer=config.issuer, audience=config.audience
        )
        endpoints = Endpoints(
            PostgresWebhookStore(database), SystemResolver(), allowed=config.allow_cidrs
        )
        return await start_server(
            config.service,
            endpoints,
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
    endpoints: Endpoints,
    verifier: AccessTokenVerifier,
    *,
    resources: contextlib.AsyncExitStack | None = None,
    denylist: Denylist | None = None,
    api_keys: ApiKeyVerifier | None = None,
    rate_limit: RateLimitInterceptor | None = None,
) -> RunningService:
    """The server around ready Endpoints; unit tests call this with a fake store.

    create_server always passes `denylist` and `api_keys` (see AuthInterceptor), and
    `rate_limit` (the per-tenant limits, which need Redis and PostgreSQL).
    """
    servicer = WebhookServicer(endpoints)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_WebhookServiceServicer_to_server(servicer, server)

    return await build_server(
        config,
        service_names=[SERVICE_NAME],
        register=register,
        resources=resources,
        auth_interceptor=AuthInterceptor(
            verifier, public_methods=PUBLIC_METHODS, denylist=denylist, api_keys=api_keys
        ),
        rate_limit_interceptor=rate_limit,
    )
