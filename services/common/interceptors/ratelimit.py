"""Rate-limit interceptor: per-client-address limits on named methods, then per-tenant by plan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from services.common.client_address import TrustedProxies, forwarded_for_values
from services.common.context import Principal, current_principal
from services.common.errors import Unauthenticated
from services.common.interceptors.base import Context, RpcInterceptor
from services.common.ratelimit import (
    LeasedLimit,
    Limit,
    PlanSource,
    Rate,
    RateLimitConfig,
    RateLimiter,
    TenantPlans,
)

TENANT_LIMIT = "tenant"


@dataclass(frozen=True)
class AddressLimit:
    """A limit on one method per client address, e.g. `login_ip`: 30 per minute."""

    name: str
    rate: Rate


class TenantLimit:
    """Each tenant's requests to one service, at the rate of the tenant's plan."""

    def __init__(self, limit: Limit, plans: TenantPlans, config: RateLimitConfig) -> None:
        self._limit = limit
        # The tenant limit runs on every call of every service: spent in leases, it costs a
        # busy tenant one Redis round trip per lease instead of one per request.
        self._leased = LeasedLimit(limit)
        self._plans = plans
        self._config = config

    async def enforce(self, tenant_id: str) -> None:
        try:
            plan = await self._plans.plan_of(tenant_id)
        except Exception as exc:
            # Fail open, like the limit itself: a plan we cannot read must not refuse work.
            self._limit.unavailable(exc)
            return
        # Per service: a call one service makes to another for the tenant is not charged twice
        # against one budget, and a burst on one service does not starve the others.
        await self._leased.enforce(
            f"{self._limit.service}:{tenant_id}", self._config.tenant_rate(plan)
        )


class RateLimitInterceptor(RpcInterceptor):
    """Runs after auth: per-address limits on `address_limits` methods (from the client address
    that trusted proxies report), then the caller's tenant limit when there is a caller.

    Requests whose every hop is a trusted proxy (internal callers) skip the per-address limits.
    """

    def __init__(
        self,
        *,
        service: str,
        limiter: RateLimiter,
        trusted_proxies: TrustedProxies,
        address_limits: Mapping[str, AddressLimit] | None = None,
        tenant_limit: TenantLimit | None = None,
    ) -> None:
        self._trusted = trusted_proxies
        self._address_limits = {
            method: (
                Limit(
                    limiter,
                    service=service,
                    name=limit.name,
                    message="too many requests from this address; retry later",
                ),
                limit.rate,
            )
            for method, limit in (address_limits or {}).items()
        }
        self._tenant_limit = tenant_limit

    @asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[None]:
        by_address = self._address_limits.get(method)
        if by_address is not None:
            limit, rate = by_address
            client = self._trusted.client(
                context.peer(), forwarded_for_values(context.invocation_metadata())
            )
            if not client.internal:
                await limit.enforce(client.subject, rate)
        principal = _principal()
        if principal is not None and self._tenant_limit is not None:
            await self._tenant_limit.enforce(principal.tenant_id)
        yield


def _principal() -> Principal | None:
    try:
        return current_principal()
    except Unauthenticated:
        return None


def rate_limit_interceptor(
    service: str,
    limiter: RateLimiter,
    plans: PlanSource,
    config: RateLimitConfig,
    *,
    address_limits: Mapping[str, AddressLimit] | None = None,
) -> RateLimitInterceptor:
    """The interceptor every service installs: tenant limits by plan, plus `address_limits`.

    `plans` already a TenantPlans (a service that reads plans for more than this) is used as
    it is, so the process keeps one cache of plans."""
    tenant = TenantLimit(
        Limit(
            limiter,
            service=service,
            name=TENANT_LIMIT,
            message="request rate limit of your plan exceeded; retry later",
        ),
        plans if isinstance(plans, TenantPlans) else TenantPlans(plans, ttl_s=config.plan_cache_s),
        config,
    )
    return RateLimitInterceptor(
        service=service,
        limiter=limiter,
        trusted_proxies=config.trusted_proxies,
        address_limits=address_limits,
        tenant_limit=tenant,
    )
