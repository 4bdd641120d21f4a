"""Builds the webhook service: stores, resolver, domain, delivery worker, retention, servicer,
server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from contextlib import AbstractAsyncContextManager

import grpc
from catalytic.webhook.v1 import webhook_service_pb2_grpc as pb_grpc

from services.common import permissions
from services.common.access_tokens import AccessTokenVerifier
from services.common.api_keys import ApiKeyVerifier
from services.common.cache import open_redis
from services.common.config import ServiceConfig
from services.common.denylist import Denylist
from services.common.errors import DomainError
from services.common.interceptors.auth import AuthInterceptor
from services.common.interceptors.base import Context, RpcInterceptor
from services.common.interceptors.permissions import PermissionInterceptor, RoleSource
from services.common.interceptors.ratelimit import RateLimitInterceptor, rate_limit_interceptor
from services.common.internal_auth import InternalToken
from services.common.keys.config import open_ring
from services.common.ratelimit import PostgresPlanSource, RateLimiter
from services.common.replica_caches import open_replica_caches
from services.common.revocations import PostgresRevocations
from services.common.roles import MembershipRoles
from services.common.server import RunningService, build_server
from services.common.subscriptions import SubscriptionNotices
from services.common.wiring import open_database, remote_token_verifier
from services.webhook.config import DeliveryConfig, WebhookConfig
from services.webhook.deliveries import Deliveries
from services.webhook.delivery_store import PostgresDeliveryStore
from services.webhook.endpoint_limit import RedisEndpointLimiter
from services.webhook.endpoints import Endpoints
from services.webhook.policy import RetryPolicy
from services.webhook.queue_store import PostgresDeliveryQueue
from services.webhook.retention import Retention
from services.webhook.retention_store import PostgresRetention
from services.webhook.secret_box import SecretBox
from services.webhook.sender import HttpSender
from services.webhook.servicer import WebhookServicer
from services.webhook.ssrf import Resolver, SystemResolver
from services.webhook.store import PostgresWebhookStore
from services.webhook.transport import guarded_client
from services.webhook.worker import DeliveryWorker

logger = logging.getLogger("catalytic.webhook")

SERVICE_NAME = "catalytic.webhook.v1.WebhookService"
# From the one table (services/common/permissions.py). None is public: every webhook RPC acts
# for a tenant or a calling service.
PUBLIC_METHODS = permissions.methods(SERVICE_NAME, permissions.Access.PUBLIC)
# Called by other services with INTERNAL_TOKEN, never by tenants (the gateway blocks them too).
INTERNAL_METHODS = permissions.methods(SERVICE_NAME, permissions.Access.INTERNAL)


class TenantCallsOnly(RpcInterceptor):
    """Applies the per-tenant rate limits to every method except the internal ones, whose
    caller is a service acting for many tenants."""

    def __init__(self, inner: RateLimitInterceptor, internal_methods: frozenset[str]) -> None:
        self._inner = inner
        self._internal = internal_methods

    def around(self, method: str, context: Context) -> AbstractAsyncContextManager[None]:
        if method in self._internal:
            return contextlib.nullcontext()
        return self._inner.around(method, context)


def retry_policy(config: DeliveryConfig) -> RetryPolicy:
    return RetryPolicy(
        config.retry_schedule_s,
        jitter=config.retry_jitter,
        retry_after_max_s=config.retry_after_max_s,
        disable_after_s=config.disable_after_s,
    )


async def create_server(
    config: WebhookConfig,
    *,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningService:
    """Starts the webhook gRPC server (NOT_SERVING until the caller marks it ready) and, unless
    WEBHOOK_WORKER_CONCURRENCY is 0, the delivery worker; stopping the server drains it.

    `resolver` and `ssl_context` replace the system's DNS and CA store (tests only).
    """
    resources = contextlib.AsyncExitStack()
    try:
        database = await open_database(config.service, resources)
        redis = await open_redis(config.service.redis_url, service=config.service.service_name)
        resources.push_async_callback(redis.aclose)
        caches = await open_replica_caches(config.service, resources)
        denylist = Denylist(redis, PostgresRevocations(database), local=caches.denylist)
        resources.push_async_callback(denylist.aclose)
        ring = open_ring(config.keys)
        resources.callback(ring.close)
        # Fails start-up by name when the ring has no KEK: nothing could be sealed.
        logger.info("key-encryption keys: %s, current %s", config.keys.describe(), ring.current_id)
        box = SecretBox(ring)
        resolver = resolver if resolver is not None else SystemResolver()
        delivery = config.delivery
        policy = retry_policy(delivery)
        worker: DeliveryWorker | None = None
        if delivery.worker_concurrency > 0:
            client = guarded_client(
                resolver,
                config.allow_cidrs,
                connect_timeout_s=delivery.connect_timeout_s,
                ssl_context=ssl_context,
            )
            resources.push_async_callback(client.aclose)
            worker = DeliveryWorker(
                PostgresDeliveryQueue(database, box),
                HttpSender(
                    client,
                    connect_timeout_s=delivery.connect_timeout_s,
                    timeout_s=delivery.timeout_s,
                ),
                policy,
                limiter=RedisEndpointLimiter(RateLimiter(redis), delivery.endpoint_rate_per_s)
                if delivery.endpoint_rate_per_s
                else None,
                concurrency=delivery.worker_concurrency,
                lease_s=delivery.lease_s,
                poll_interval_s=delivery.poll_interval_s,
            )
        wake = worker.wake if worker is not None else _nothing
        notices = SubscriptionNotices(redis)
        webhook_store = PostgresWebhookStore(database, box, notices=notices)

        async def unwanted(tenant_id: str) -> None:
            # No endpoint took a tenant's event: record what it subscribes to (only if no
            # change widened it meanwhile), so that the lattice service stops writing them.
            # Best effort: the event itself was handled.
            try:
                await notices.record_unwanted(tenant_id, webhook_store.subscribed_types)
            except DomainError as exc:
                logger.debug("subscriptions of %s not recorded: %s", tenant_id, exc)

        endpoints = Endpoints(
            webhook_store,
            resolver,
            allowed=config.allow_cidrs,
            secret_overlap_s=delivery.secret_overlap_s,
            wake=wake,
        )
        deliveries = Deliveries(
            PostgresDeliveryStore(database, box, worker=worker),
            policy,
            wake=wake,
            unwanted=unwanted,
        )
        verifier = remote_token_verifier(
            config.service, resources, issuer=config.issuer, audience=config.audience
        )
        running = await start_server(
            config.service,
            endpoints,
            deliveries,
            verifier,
            internal_token=config.internal_token,
            resources=resources,
            denylist=denylist,
            api_keys=ApiKeyVerifier(database),
            roles=MembershipRoles(redis, database, local=caches.roles),
            rate_limit=rate_limit_interceptor(
                config.service.service_name,
                RateLimiter(redis),
                PostgresPlanSource(database),
                config.rate_limits,
            ),
        )
        if worker is not None:
            start_worker(running, worker, config.service.shutdown_grace_s)
        if config.retention.enabled:
            start_retention(
                running,
                Retention(
                    PostgresRetention(database),
                    retention_s=config.retention.retention_s,
                    interval_s=config.retention.interval_s,
                    batch=config.retention.batch,
                ),
            )
        return running
    except BaseException:
        await resources.aclose()
        raise


def _nothing() -> None:
    return None


def start_worker(running: RunningService, worker: DeliveryWorker, grace: float) -> None:
    """Runs `worker` for as long as `running`: it starts draining as soon as the server starts
    stopping (alongside the RPCs' grace), and is drained before the database closes."""
    worker.start()

    async def drain_on_stop() -> None:
        await running.stopping.wait()
        await worker.stop(grace)

    watcher = asyncio.create_task(drain_on_stop(), name="webhook-worker-drain")
    # The stack closes last-in first-out: the worker is drained before the client and pool.
    running.resources.callback(watcher.cancel)
    running.resources.push_async_callback(worker.stop, grace)


def start_retention(running: RunningService, retention: Retention) -> None:
    """Runs `retention` for as long as `running`; it stops when the server starts stopping,
    before the database closes."""
    retention.start()

    async def stop_on_stop() -> None:
        await running.stopping.wait()
        await retention.stop()

    watcher = asyncio.create_task(stop_on_stop(), name="webhook-retention-stop")
    running.resources.callback(watcher.cancel)
    running.resources.push_async_callback(retention.stop)


async def start_server(
    config: ServiceConfig,
    endpoints: Endpoints,
    deliveries: Deliveries,
    verifier: AccessTokenVerifier,
    *,
    internal_token: InternalToken | None = None,
    resources: contextlib.AsyncExitStack | None = None,
    denylist: Denylist | None = None,
    api_keys: ApiKeyVerifier | None = None,
    roles: RoleSource | None = None,
    rate_limit: RateLimitInterceptor | None = None,
) -> RunningService:
    """The server around ready domain objects; unit tests call this with fake stores.

    create_server always passes `internal_token` (without it PublishEvent refuses everyone),
    `denylist` and `api_keys` (see AuthInterceptor), `roles` (see PermissionInterceptor), and
    `rate_limit` (the per-tenant limits, which need Redis and PostgreSQL).
    """
    servicer = WebhookServicer(endpoints, deliveries)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_WebhookServiceServicer_to_server(servicer, server)

    return await build_server(
        config,
        service_names=[SERVICE_NAME],
        register=register,
        resources=resources,
        auth_interceptor=AuthInterceptor(
            verifier,
            service=config.service_name,
            public_methods=PUBLIC_METHODS,
            denylist=denylist,
            api_keys=api_keys,
            internal_methods=INTERNAL_METHODS,
            internal_token=internal_token,
        ),
        permission_interceptor=PermissionInterceptor([SERVICE_NAME], roles=roles),
        rate_limit_interceptor=TenantCallsOnly(rate_limit, INTERNAL_METHODS)
        if rate_limit is not None
        else None,
    )
