"""The local caches a service replica keeps, and the one invalidation feed behind them.

Every service checks the denylist and the caller's role on every authenticated call; the
lattice service also reads lattices' metadata on every GetLattice. Each is a Redis or
PostgreSQL round trip the replica can skip while Redis's invalidation feed is live (ADR 68).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from services.common.config import ServiceConfig
from services.common.invalidation import InvalidationFeed
from services.common.local_cache import LocalCache
from services.common.subscriptions import PREFIX as SUBSCRIPTIONS_PREFIX

DENYLIST_PREFIX = "denylist:"
ROLES_PREFIX = "membership:"
# Written by the lattice service when a lattice changes (services/lattice/changes.py).
LATTICES_PREFIX = "lattice:changed:"
# Bounds of each cache: entries are small (a flag, a role, a lattice's row), so the count
# bounds the memory: 100,000 entries are a few tens of MB at most.
MAX_ENTRIES = 100_000
# No entry is trusted for longer, whatever the feed says: a bound on any gap in it.
MAX_AGE_S = 5.0


@dataclass(frozen=True, slots=True)
class ReplicaCaches:
    """The caches to hand to the Denylist, MembershipRoles and (lattice service) its store and
    Subscriptions; all None when the service runs without them (LOCAL_CACHES=false)."""

    denylist: LocalCache[bool] | None = None
    roles: LocalCache[str | None] | None = None
    lattices: LocalCache[Any] | None = None
    subscriptions: LocalCache[bytes | None] | None = None


async def open_replica_caches(
    config: ServiceConfig,
    resources: contextlib.AsyncExitStack,
    *,
    lattice_service: bool = False,
) -> ReplicaCaches:
    """Starts the feed (closed with `resources`) and makes the caches; for the lattice service
    also lattices' metadata and tenants' webhook subscriptions (services.common.subscriptions).
    """
    if not config.local_caches:
        return ReplicaCaches()
    feed = InvalidationFeed(config.redis_url, service=config.service_name)
    denylist = feed.cache("denylist", DENYLIST_PREFIX, max_entries=MAX_ENTRIES, max_age_s=MAX_AGE_S)
    roles = feed.cache("roles", ROLES_PREFIX, max_entries=MAX_ENTRIES, max_age_s=MAX_AGE_S)
    lattices = subscriptions = None
    if lattice_service:
        lattices = feed.cache(
            "lattices", LATTICES_PREFIX, max_entries=MAX_ENTRIES, max_age_s=MAX_AGE_S
        )
        subscriptions = feed.cache(
            "subscriptions", SUBSCRIPTIONS_PREFIX, max_entries=MAX_ENTRIES, max_age_s=MAX_AGE_S
        )
    await feed.start()
    resources.push_async_callback(feed.aclose)
    return ReplicaCaches(
        denylist=denylist, roles=roles, lattices=lattices, subscriptions=subscriptions
    )
