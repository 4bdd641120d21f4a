"""Per-account log-in lockout with exponential backoff, kept in Redis, on by default.

Every log-in attempt for an e-mail address counts as a failure from the moment it starts until
`record_success` forgives it; counting up front is what stops a burst of parallel guesses from
slipping past the threshold before the first one has been verified. From the `threshold`-th
counted attempt on, the address is locked for `base_s`, doubling with each further failure up
to `max_s`. The count is forgotten `window_s` after the last attempt's lock ends.

Unknown addresses are counted and locked exactly like registered ones, and a locked address is
refused before its password is checked, so the answer never tells whether an account exists,
nor whether a guess made during the lock was right.

An attempt the service could not judge (the database was down before the password was looked
at) is taken back with `forgive`, so that users retrying through an outage are not locked out
by it.

Redis unavailable: `check` fails closed (Unavailable), because a lockout that cannot be read
cannot protect anything; `record_success` only logs, because the user has proved the password.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from services.common.cache import REDIS_FAILURES, RedisCalls
from services.common.errors import ResourceExhausted, Unavailable
from services.common.ratelimit import KEY_PREFIX, RATE_LIMIT_ERRORS, RATE_LIMITED

logger = logging.getLogger("catalytic.auth.lockout")

SERVICE = "auth"
LIMIT_NAME = "login_lockout"
LOCKED = "too many failed log-in attempts; try again later"
DEFAULT_TIMEOUT_S = 2.0

# KEYS[1] the address's attempt count, KEYS[2] its lock. ARGV: threshold, base lock (ms),
# longest lock (ms), window (ms). Returns {allowed, ms until the lock ends or attempts counted}.
_ATTEMPT = """
local locked_ms = redis.call('PTTL', KEYS[2])
if locked_ms > 0 then
  return {0, locked_ms}
end
local threshold = tonumber(ARGV[1])
local count = redis.call('INCR', KEYS[1])
local lock_ms = 0
if count >= threshold then
  lock_ms = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ math.min(count - threshold, 40))
  redis.call('SET', KEYS[2], '1', 'PX', string.format('%d', lock_ms))
end
redis.call('PEXPIRE', KEYS[1], string.format('%d', lock_ms + tonumber(ARGV[4])))
return {1, count}
"""

# KEYS as _ATTEMPT; ARGV[1] threshold. Takes one counted attempt back; below the threshold
# again, the lock it set goes too.
_FORGIVE = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count <= 0 then
  return 0
end
count = redis.call('DECR', KEYS[1])
if count < tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[2])
end
return count
"""


@dataclass(frozen=True)
class LockoutPolicy:
    """When to lock and for how long; see the module docstring."""

    threshold: int = 5
    base_s: float = 60.0
    max_s: float = 900.0
    window_s: float = 900.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("the lockout threshold must be at least 1")
        if not 0 < self.base_s <= self.max_s or self.window_s <= 0:
            raise ValueError("lockout times need 0 < base <= max and window > 0")

    def lock_s(self, attempts: int) -> float:
        """How long the `attempts`-th counted attempt locks the address (0: not at all)."""
        if attempts < self.threshold:
            return 0.0
        doublings = min(attempts - self.threshold, 40)
        return min(self.max_s, self.base_s * float(2**doublings))


def lockout_keys(email: str) -> tuple[str, str]:
    """The attempt-count and lock keys of an address; hashed, and one Redis Cluster hash slot."""
    digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:32]
    base = f"{KEY_PREFIX}:{LIMIT_NAME}:{{{digest}}}"
    return f"{base}:attempts", f"{base}:lock"


class LoginLockout:
    """The lockout for Accounts.login: `check` before the password, then `record_*` after."""

    def __init__(
        self,
        redis: aioredis.Redis,
        policy: LockoutPolicy | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._redis = redis
        self._attempt = redis.register_script(_ATTEMPT)
        self._forgive = redis.register_script(_FORGIVE)
        self.policy = policy or LockoutPolicy()
        self._call = RedisCalls(redis, timeout_s)

    def locks(self, attempt: int) -> bool:
        """Whether the `attempt`-th counted attempt, failed, locks the address."""
        return self.policy.lock_s(attempt) > 0

    async def check(self, email: str) -> int:
        """Counts this attempt and answers its number; ResourceExhausted with retry_after_s
        while the address is locked, Unavailable when Redis cannot say."""
        policy = self.policy
        try:
            allowed, value = await self._call(
                self._attempt(
                    keys=list(lockout_keys(email)),
                    args=[
                        policy.threshold,
                        round(policy.base_s * 1000),
                        round(policy.max_s * 1000),
                        round(policy.window_s * 1000),
                    ],
                )
            )
        except REDIS_FAILURES as exc:
            RATE_LIMIT_ERRORS.labels(SERVICE, LIMIT_NAME).inc()
            raise Unavailable("log-in is temporarily unavailable; retry shortly") from exc
        if not int(allowed):
            RATE_LIMITED.labels(SERVICE, LIMIT_NAME).inc()
            raise ResourceExhausted(LOCKED, retry_after_s=int(value) / 1000)
        return int(value)

    async def record_failure(self, email: str) -> None:
        """The attempt failed. `check` counted it already; this logs it for the operators."""
        logger.info(
            "failed log-in attempt",
            extra={"lockout_key": lockout_keys(email)[0].rsplit(":", 1)[0]},
        )

    async def forgive(self, email: str) -> None:
        """The attempt `check` counted could not be judged (a dependency was down before the
        password was looked at): it no longer counts. Redis unavailable: only logged."""
        try:
            await self._call(
                self._forgive(keys=list(lockout_keys(email)), args=[self.policy.threshold])
            )
        except REDIS_FAILURES as exc:
            logger.warning("could not take back a log-in attempt: %r", exc)

    async def record_success(self, email: str) -> None:
        """The password was right: forgets the address's attempts and lifts its lock."""
        try:
            await self._call(self._redis.delete(*lockout_keys(email)))
        except REDIS_FAILURES as exc:
            # The count expires by itself; refusing a proven password would help nobody.
            RATE_LIMIT_ERRORS.labels(SERVICE, LIMIT_NAME).inc()
            logger.warning("could not reset the log-in lockout: %r", exc)
