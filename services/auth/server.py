"""Builds the auth service: store, keys, domain, servicer, interceptors, server."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import grpc
from catalytic.auth.v1 import auth_service_pb2_grpc as pb_grpc

from services.auth.accounts import Accounts
from services.auth.api_keys import ApiKeys
from services.auth.audit_log import AuditLog
from services.auth.config import AuthConfig, open_signing_keys
from services.auth.invitations import Invitations
from services.auth.lockout import LoginLockout
from services.auth.members import Members
from services.auth.servicer import AuthServicer
from services.auth.store import PostgresAuthStore
from services.auth.team_store import PostgresTeamStore
from services.auth.tokens import TokenIssuer
from services.common import permissions
from services.common.access_tokens import AccessTokenVerifier
from services.common.api_keys import ApiKeyVerifier
from services.common.audit import AuditTrail
from services.common.cache import open_redis
from services.common.db import Database
from services.common.denylist import Denylist
from services.common.interceptors.auth import AuthInterceptor
from services.common.interceptors.permissions import PermissionInterceptor
from services.common.interceptors.ratelimit import (
    AddressLimit,
    RateLimitInterceptor,
    rate_limit_interceptor,
)
from services.common.ratelimit import PostgresPlanSource, RateLimiter
from services.common.replica_caches import open_replica_caches
from services.common.revocations import PostgresRevocations
from services.common.roles import MembershipCache, MembershipRoles
from services.common.server import RunningService, build_server
from services.common.wiring import open_database

logger = logging.getLogger("catalytic.auth")

SERVICE_NAME = "catalytic.auth.v1.AuthService"
# From the one table (services/common/permissions.py).
PUBLIC_METHODS = permissions.methods(SERVICE_NAME, permissions.Access.PUBLIC)
# Public, but a credential sent is verified: AcceptInvitation as the signed-in user.
OPTIONAL_METHODS = permissions.methods(SERVICE_NAME, permissions.Access.OPTIONAL)


async def create_server(config: AuthConfig) -> RunningService:
    """Starts the auth gRPC server (NOT_SERVING until the caller marks it ready)."""
    resources = contextlib.AsyncExitStack()
    try:
        keys = open_signing_keys(config.signing_keys, generate_if_empty=True)
        resources.callback(keys.close)
        # Fails start-up by name when a token holds no signing key: no token could be issued.
        logger.info("JWT signing keys: %s, signing kid %s", keys.describe(), keys.signing_kid)
        database = await open_database(config.service, resources)
        redis = await open_redis(config.service.redis_url, service=config.service.service_name)
        resources.push_async_callback(redis.aclose)
        revocations = PostgresRevocations(database)
        caches = await open_replica_caches(config.service, resources)
        denylist = Denylist(redis, revocations, local=caches.denylist)
        resources.push_async_callback(denylist.aclose)
        store = PostgresAuthStore(database)
        lockout = LoginLockout(redis, config.lockout)
        accounts = Accounts(
            store,
            TokenIssuer(
                keys,
                issuer=config.issuer,
                audience=config.audience,
                ttl_s=config.access_token_ttl_s,
            ),
            denylist=denylist,
            revocations=revocations,
            lockout=lockout,
            audit_trail=AuditTrail(database),
            default_plan=config.default_plan,
            refresh_ttl_s=config.refresh_token_ttl_s,
        )

        async def local_jwks() -> Sequence[dict[str, str]]:
            return keys.jwks()

        verifier = AccessTokenVerifier(local_jwks, issuer=config.issuer, audience=config.audience)
        team_store = PostgresTeamStore(database, store)
        role_cache = MembershipCache(redis)
        servicer = AuthServicer(
            accounts,
            ApiKeys(store, denylist),
            keys,
            members=Members(team_store, store, role_cache),
            invitations=Invitations(
                team_store, store, role_cache, lockout, ttl_s=config.invitation_ttl_s
            ),
            audit_log=AuditLog(database),
        )

        def register(server: grpc.aio.Server) -> None:
            pb_grpc.add_AuthServiceServicer_to_server(servicer, server)

        return await build_server(
            config.service,
            service_names=[SERVICE_NAME],
            register=register,
            resources=resources,
            auth_interceptor=AuthInterceptor(
                verifier,
                service=config.service.service_name,
                public_methods=PUBLIC_METHODS,
                optional_methods=OPTIONAL_METHODS,
                denylist=denylist,
                api_keys=ApiKeyVerifier(database),
            ),
            permission_interceptor=PermissionInterceptor(
                [SERVICE_NAME], roles=MembershipRoles(redis, database, local=caches.roles)
            ),
            rate_limit_interceptor=rate_limits(config, RateLimiter(redis), database),
        )
    except BaseException:
        await resources.aclose()
        raise


def rate_limits(
    config: AuthConfig, limiter: RateLimiter, database: Database
) -> RateLimitInterceptor:
    """Per-address limits on the public entry points, and the tenant limit on everything else."""
    method = f"/{SERVICE_NAME}/{{}}".format
    return rate_limit_interceptor(
        config.service.service_name,
        limiter,
        PostgresPlanSource(database),
        config.rate_limits,
        address_limits={
            method("Register"): AddressLimit("register_ip", config.register_rate),
            method("Login"): AddressLimit("login_ip", config.login_rate),
            method("Refresh"): AddressLimit("refresh_ip", config.refresh_rate),
            # It may check a password: limited like log-in, in a bucket of its own.
            method("AcceptInvitation"): AddressLimit("accept_invitation_ip", config.login_rate),
        },
    )
