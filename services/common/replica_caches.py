"""The local caches a service replica keeps, and the one invalidation feed behind them.

Every service checks the denylist and the caller's role on every authenticated call; the
lattice service also reads lattices' metadata on every GetLattice. Each is a Redis or
PostgreSQL round trip the replica can skip while Redis's invalidation feed is live (ADR 67).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from services.common.config import ServiceConfig
from services.common.invalidation import InvalidationFeed
from services.common.local_cache import LocalCache

DENYLIST_PREFIX = "denylist:"
ROLES_PREFIX = "membership:"
# Bounds of each cache: entries are small (a flag, a role, a lattice's row), so the count
# bounds the memory: 100,000 entries are a few tens of MB at most.
MAX_ENTRIES = 100_000
# No entry is trusted for longer, whatever the feed says: a bound on any gap in it.
MAX_AGE_S = 5.0


@dataclass(frozen=True, slots=True)
class ReplicaCaches:
    """The caches to hand to the Denylist, MembershipRoles and (lattice) the store; all None
    when the service runs without them (LOCAL_CACHES=false)."""

    denylist: LocalCache[bool] | None = None
    roles: LocalCache[str | None] | None = None
    lattices: LocalCache[Any] | None = None


async def open_replica_caches(
    config: ServiceConfig,
    resources: contextlib.AsyncExitStack,
    *,
    lattice_prefix: str | None = None,
) -> ReplicaCaches:
    """Starts the feed (closed with `resources`) and makes the caches; a lattice metadata
    cache too when `lattice_prefix` names its keys."""
    if not config.local_caches:
        return ReplicaCaches()
    feed = InvalidationFeed(config.redis_url, service=config.service_name)
    denylist = feed.cache("denylist", DENYLIST_PREFIX, max_entries=MAX_ENTRIES, max_age_s=MAX_AGE_S)
    roles = feed.cache("roles", ROLES_PREFIX, max_entries=MAX_ENTRIES, max_age_s=MAX_AGE_S)
    lattices = (
        feed.cache("lattices", lattice_prefix, max_entries=MAX_ENTRIES, max_age_s=MAX_AGE_S)
        if lattice_prefix is not None
        else None
    )
    await feed.start()
    resources.push_async_callback(feed.aclose)
    return ReplicaCaches(denylist=denylist, roles=roles, lattices=lattices)
