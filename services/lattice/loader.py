"""Fields for reading: from the cache by (id, version), else from PostgreSQL, checksum verified.

Concurrent misses on one lattice share one load, so a burst of path requests on a cold 64 MiB
field reads and decodes it once, not once per request.
"""

from __future__ import annotations

import asyncio
import logging

from services.common.errors import NotFound
from services.lattice.cache import FieldCache
from services.lattice.engine.field import Field
from services.lattice.fields import decode_field
from services.lattice.records import LATTICE_NOT_FOUND, LatticeRecord, LatticeStore

logger = logging.getLogger(__name__)

Loaded = tuple[LatticeRecord, Field]


class FieldLoader:
    """Reads a tenant's lattice with its field, through the cache."""

    def __init__(self, store: LatticeStore, cache: FieldCache) -> None:
        self._store = store
        self._cache = cache
        # (tenant, lattice) -> the load in flight; keyed by tenant too, so that a load started
        # under one tenant's row-level security is only ever shared within that tenant.
        self._loading: dict[tuple[str, str], asyncio.Future[Loaded]] = {}

    async def record(self, tenant_id: str, lattice_id: str) -> LatticeRecord:
        """The lattice's metadata (NotFound when it is not the tenant's)."""
        record = await self._store.get(tenant_id, lattice_id)
        if record is None:
            raise NotFound(LATTICE_NOT_FOUND)
        return record

    async def load(self, tenant_id: str, lattice_id: str) -> Loaded:
        """The lattice and its field at its current version."""
        return await self.field_for(tenant_id, await self.record(tenant_id, lattice_id))

    async def field_for(self, tenant_id: str, record: LatticeRecord) -> Loaded:
        """`record`'s field from the cache; on a miss, the lattice and field as now stored
        (a transform may have committed since `record` was read: then both are newer)."""
        cached = self._cache.get(record.id, record.version)
        if cached is not None:
            return record, cached
        key = (tenant_id, record.id)
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load(tenant_id, record.id))
            self._loading[key] = pending
            pending.add_done_callback(lambda done: self._forget(key, done))
        # Shielded: one waiter going away must not cancel the load the others wait for.
        return await asyncio.shield(pending)

    def _forget(self, key: tuple[str, str], done: asyncio.Future[Loaded]) -> None:
        if self._loading.get(key) is done:
            del self._loading[key]
        if not done.cancelled() and done.exception() is not None:
            # Retrieved here so that a load whose every waiter left is not reported as lost.
            logger.debug("field load failed: %r", done.exception())

    async def _load(self, tenant_id: str, lattice_id: str) -> Loaded:
        found = await self._store.get_with_field(tenant_id, lattice_id)
        if found is None:
            raise NotFound(LATTICE_NOT_FOUND)
        record, encoded = found
        field = await asyncio.to_thread(decode_field, encoded, record.vertex_count)
        self._cache.put(record.id, record.version, field)
        return record, field
