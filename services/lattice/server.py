"""Builds the lattice service: store, compute, cache, domain, relay, servicer, server."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import grpc
from catalytic.lattice.v1 import lattice_service_pb2_grpc as pb_grpc

from services.common import permissions
from services.common.access_tokens import AccessTokenVerifier
from services.common.api_keys import ApiKeyVerifier
from services.common.cache import open_redis
from services.common.config import ServiceConfig
from services.common.denylist import Denylist
from services.common.grpc_client import channel_options
from services.common.interceptors.auth import AuthInterceptor
from services.common.interceptors.permissions import PermissionInterceptor, RoleSource
from services.common.interceptors.ratelimit import RateLimitInterceptor, rate_limit_interceptor
from services.common.internal_auth import INTERNAL_TOKEN_VARIABLE
from services.common.ratelimit import PostgresPlanSource, RateLimiter, TenantPlans
from services.common.replica_caches import open_replica_caches
from services.common.revocations import PostgresRevocations
from services.common.roles import MembershipRoles
from services.common.server import RunningService, build_server
from services.common.subscriptions import Subscriptions
from services.common.wiring import open_database, remote_token_verifier
from services.lattice import changes, metrics
from services.lattice.cache import FieldCache
from services.lattice.catalog import Catalog
from services.lattice.config import LatticeConfig
from services.lattice.engine.compute import Router, open_compute
from services.lattice.engine.field import BYTES_PER_VERTEX
from services.lattice.engine.shapes import MAX_VERTICES
from services.lattice.events import EventLog
from services.lattice.operations import LatticeOperations
from services.lattice.outbox import OutboxRelay
from services.lattice.outbox_store import PostgresOutbox
from services.lattice.publisher import WebhookPublisher
from services.lattice.servicer import LatticeServicer
from services.lattice.store import PostgresLatticeStore

logger = logging.getLogger("catalytic.lattice")

SERVICE_NAME = "catalytic.lattice.v1.LatticeService"
# From the one table (services/common/permissions.py): none, every lattice RPC acts for a tenant.
PUBLIC_METHODS = permissions.methods(SERVICE_NAME, permissions.Access.PUBLIC)
# A `values` fill of the largest lattice is 64 MiB; the rest of a request is tiny.
MAX_MESSAGE_BYTES = MAX_VERTICES * BYTES_PER_VERTEX + 1024 * 1024
RELAY_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


@dataclass(frozen=True)
class Domain:
    """The use cases a servicer adapts."""

    catalog: Catalog
    operations: LatticeOperations

    @classmethod
    def of(cls, catalog: Catalog) -> Domain:
        return cls(catalog, catalog.operations())


def watch_compute(router: Router, resources: contextlib.AsyncExitStack) -> None:
    """Exports the router's pool, GPU and fallback figures until `resources` close."""
    resources.callback(metrics.COMPUTE_GAUGES.remove, metrics.COMPUTE_GAUGES.add(router.stats))


def watch_outbox(relay: OutboxRelay, resources: contextlib.AsyncExitStack) -> None:
    """Exports the relay's last backlog measurement until `resources` close."""
    resources.callback(metrics.OUTBOX_GAUGES.remove, metrics.OUTBOX_GAUGES.add(relay.backlog))


async def create_server(config: LatticeConfig) -> RunningService:
    """Starts the lattice gRPC server (NOT_SERVING until the caller marks it ready).

    Closing it (RunningService.stop) stops the server, then the relay, the compute pool, Redis
    and the database, in that order.
    """
    resources = contextlib.AsyncExitStack()
    try:
        database = await open_database(config.service, resources)
        redis = await open_redis(config.service.redis_url, service=config.service.service_name)
        resources.push_async_callback(redis.aclose)
        caches = await open_replica_caches(config.service, resources, lattice_service=True)
        denylist = Denylist(redis, PostgresRevocations(database), local=caches.denylist)
        resources.push_async_callback(denylist.aclose)
        verifier = remote_token_verifier(
            config.service, resources, issuer=config.issuer, audience=config.audience
        )
        compute = await open_compute(config.compute)
        resources.push_async_callback(compute.close)
        watch_compute(compute, resources)

        relay_config = config.relay
        if relay_config.internal_token is None:
            logger.warning(
                "%s is not set: PublishEvent will refuse the outbox relay, and events wait in"
                " the outbox until it is",
                INTERNAL_TOKEN_VARIABLE,
            )
        # Reconnect within seconds of the webhook service's return, however long it was away
        # (gRPC's default back-off grows to two minutes).
        channel = grpc.aio.insecure_channel(
            relay_config.webhook_addr, options=[*channel_options(), *RELAY_RECONNECT]
        )
        resources.push_async_callback(channel.close)
        publisher = WebhookPublisher(
            channel, relay_config.internal_token, timeout_s=relay_config.publish_timeout_s
        )
        outbox = PostgresOutbox(database, sent_retention_s=relay_config.sent_retention_s)
        relay = OutboxRelay(outbox, publisher, relay_config.settings)
        relay.start()
        resources.push_async_callback(relay.close)
        watch_outbox(relay, resources)

        store = PostgresLatticeStore(
            database,
            metadata=caches.lattices,
            changes=changes.LatticeChanges(redis),
            subscriptions=Subscriptions(redis, local=caches.subscriptions),
        )
        cache = FieldCache(config.cache_bytes)
        event_log = EventLog(store, relay.wake)
        # One cache of plans for the tenant rate limit and the tenants' compute shares.
        plans = TenantPlans(PostgresPlanSource(database), ttl_s=config.rate_limits.plan_cache_s)
        catalog = Catalog(
            store,
            compute,
            cache,
            event_log,
            max_compute_s=config.compute_deadline_s,
            plans=plans,
        )
        return await start_server(
            config.service,
            catalog,
            verifier,
            resources=resources,
            denylist=denylist,
            api_keys=ApiKeyVerifier(database),
            roles=MembershipRoles(redis, database, local=caches.roles),
            rate_limit=rate_limit_interceptor(
                config.service.service_name,
                RateLimiter(redis),
                plans,
                config.rate_limits,
            ),
        )
    except BaseException:
        await resources.aclose()
        raise


async def start_server(
    config: ServiceConfig,
    domain: Domain | Catalog,
    verifier: AccessTokenVerifier,
    *,
    resources: contextlib.AsyncExitStack | None = None,
    denylist: Denylist | None = None,
    api_keys: ApiKeyVerifier | None = None,
    roles: RoleSource | None = None,
    rate_limit: RateLimitInterceptor | None = None,
) -> RunningService:
    """The server around a ready domain (or a Catalog, with its own operations); unit tests
    call this with a fake store.

    create_server always passes `denylist` and `api_keys` (see AuthInterceptor), `roles` (see
    PermissionInterceptor), and `rate_limit` (the per-tenant limits, which need Redis and
    PostgreSQL).
    """
    if isinstance(domain, Catalog):
        domain = Domain.of(domain)
    servicer = LatticeServicer(domain.catalog, domain.operations)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_LatticeServiceServicer_to_server(servicer, server)

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
        ),
        permission_interceptor=PermissionInterceptor([SERVICE_NAME], roles=roles),
        rate_limit_interceptor=rate_limit,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )
