"""Telling every lattice replica that a lattice changed, so none serves its old metadata.

Each replica keeps lattices' metadata in a local cache (store.py, `PostgresLatticeStore.get`)
under the Redis key `lattice:changed:<id>`; a write to that key reaches every replica's
invalidation feed (services.common.invalidation, ADR 68). A transaction that changes a lattice
(a transform's new version, a delete) writes the key twice:

- before it commits, so that a Redis that cannot take the write rolls the change back
  (Unavailable) rather than leave replicas unaware of it;
- after it commits, before the caller is answered, because a replica may have read the old
  row (and cached it) between the first write and the commit.

If the second write fails (Redis lost between the two), the change stands, the failure is
logged and counted, and replicas whose feed is still live may serve the previous version until
their entry's age limit (`METADATA_MAX_AGE_S`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis.asyncio as aioredis
from prometheus_client import Counter

from services.common.cache import REDIS_FAILURES, RedisCalls, service_of
from services.common.errors import Unavailable
from services.common.replica_caches import LATTICES_PREFIX

logger = logging.getLogger("catalytic.lattice.changes")

KEY_PREFIX = LATTICES_PREFIX
# The key only has to be written; it need not outlive the replicas' cache entries.
KEY_TTL_S = 60
METADATA_MAX_AGE_S = 5.0
DEFAULT_TIMEOUT_S = 2.0
UNAVAILABLE = "lattice change notices are unavailable; retry shortly"

NOTICE_FAILURES = Counter(
    "catalytic_lattice_change_notice_failures_total",
    "Lattice changes committed whose after-commit notice to the other replicas' caches failed"
    " (they may serve the previous version until their entry's age limit).",
    ["service"],
)


def changed_key(lattice_id: str) -> str:
    """The Redis key whose write invalidates the lattice's cached metadata."""
    return KEY_PREFIX + lattice_id


class LatticeChanges:
    """Writes the change keys of the lattices a transaction changed."""

    def __init__(self, redis: aioredis.Redis, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._redis = redis
        self._calls = RedisCalls(redis, timeout_s)
        self._failures = NOTICE_FAILURES.labels(service_of(redis))

    async def before_commit(self, lattice_ids: Iterable[str]) -> None:
        """Inside the changing transaction: Unavailable (and so a rollback) if Redis cannot
        take the notice."""
        try:
            await self._notify(lattice_ids)
        except REDIS_FAILURES as exc:
            raise Unavailable(UNAVAILABLE, retry_after_s=1.0) from exc

    async def after_commit(self, lattice_ids: Iterable[str]) -> None:
        """Once committed; a failure cannot undo the change, so it is logged and counted."""
        ids = list(lattice_ids)
        try:
            await self._notify(ids)
        except REDIS_FAILURES as exc:
            self._failures.inc()
            logger.warning("could not announce the change of lattices %s: %s", ids, exc)

    async def _notify(self, lattice_ids: Iterable[str]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for lattice_id in lattice_ids:
                pipe.set(changed_key(lattice_id), b"1", ex=KEY_TTL_S)
            await self._calls(pipe.execute())
