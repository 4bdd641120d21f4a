"""The per-endpoint delivery rate, shared by every replica through Redis (GCRA)."""

from __future__ import annotations

from services.common.errors import ResourceExhausted
from services.common.ratelimit import Limit, Rate, RateLimiter

LIMIT_NAME = "webhook_endpoint"


class RedisEndpointLimiter:
    """EndpointLimiter: `per_s` attempts per second per endpoint, burst the same; fails open
    (Redis away: attempts go out unlimited, counted in catalytic_rate_limit_errors_total)."""

    def __init__(self, limiter: RateLimiter, per_s: int) -> None:
        self._limit = Limit(
            limiter,
            service="webhook",
            name=LIMIT_NAME,
            message="endpoint delivery rate reached",
        )
        self._rate = Rate.per(per_s, 1.0)

    async def wait_s(self, webhook_id: str) -> float:
        try:
            await self._limit.enforce(webhook_id, self._rate)
        except ResourceExhausted as exc:
            return max(exc.retry_after_s or 0.0, 1.0 / self._rate.limit)
        return 0.0
