"""Creating, reading, listing and deleting lattices: the lattice domain, free of gRPC and SQL."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.common import paging
from services.common.context import Principal
from services.common.errors import InvalidArgument, NotFound
from services.common.paging import Cursor
from services.lattice import plans
from services.lattice.fields import EncodedField, Fill, check_fill, encode_field
from services.lattice.shapes import Shape, shape_violations

LATTICE_NOT_FOUND = "lattice not found"
MAX_NAME_LENGTH = 100


@dataclass(frozen=True)
class LatticeRecord:
    """A lattice's metadata as stored."""

    id: str
    name: str
    dimensions: int
    size: int
    vertex_count: int
    edge_count: int
    version: int
    checksum: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NewLattice:
    """What the domain decided about a lattice about to be inserted."""

    id: str
    name: str
    shape: Shape


class CreationSession(Protocol):
    """One open tenant transaction in which limits are checked and the lattice inserted."""

    async def lock_tenant(self) -> str | None:
        """Locks the tenant's row until the transaction ends and returns its plan (None: gone)."""

    async def count_lattices(self) -> int:
        """How many lattices the tenant holds now."""

    async def insert(self, lattice: NewLattice, field: EncodedField) -> LatticeRecord:
        """Inserts the lattice at version 1 with its field."""


class LatticeStore(Protocol):
    """Persistence the lattice domain needs (PostgreSQL in production)."""

    def creation(self, tenant_id: str) -> AbstractAsyncContextManager[CreationSession]:
        """A transaction that commits when the block ends normally and rolls back otherwise."""

    async def get(self, tenant_id: str, lattice_id: str) -> LatticeRecord | None:
        """The lattice, if it exists in that tenant."""

    async def list_lattices(
        self, tenant_id: str, *, limit: int, after: Cursor | None
    ) -> list[LatticeRecord]:
        """Up to `limit` lattices newest first, starting strictly after `after`."""

    async def delete(self, tenant_id: str, lattice_id: str) -> bool:
        """Deletes the lattice and its field; False when there was none."""


@dataclass(frozen=True)
class LatticePage:
    """One page of a listing."""

    lattices: list[LatticeRecord]
    next_page_token: str


def name_violations(name: str) -> list[tuple[str, str]]:
    """(field, problem) pairs for a lattice name, judged after stripping blanks."""
    if not 1 <= len(name.strip()) <= MAX_NAME_LENGTH:
        return [("name", f"must be 1 to {MAX_NAME_LENGTH} characters")]
    return []


def parse_id(value: str, field: str = "id") -> str:
    """The canonical form of a UUID, or InvalidArgument naming `field`."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(field, "is not a valid lattice id") from None


class Catalog:
    """Use cases of the lattice service."""

    def __init__(self, store: LatticeStore) -> None:
        self._store = store

    async def create(
        self, principal: Principal, *, name: str, dimensions: int, size: int, fill: Fill | None
    ) -> LatticeRecord:
        """Validates, checks the plan's limits, then builds and stores the field, in that order."""
        violations = name_violations(name) + shape_violations(dimensions, size)
        if violations:
            raise InvalidArgument.of(violations)
        shape = Shape(dimensions=dimensions, size=size)
        checked = check_fill(fill, shape.vertex_count)
        async with self._store.creation(principal.tenant_id) as session:
            plan = await session.lock_tenant()
            if plan is None:
                raise NotFound("tenant not found")
            plans.check_vertex_limit(plan, shape.vertex_count)
            # Counted under the tenant lock, so concurrent creates cannot overshoot the limit.
            plans.check_lattice_count(plan, await session.count_lattices())
            field = await asyncio.to_thread(encode_field, checked, shape.vertex_count)
            lattice = NewLattice(id=str(uuid.uuid4()), name=name.strip(), shape=shape)
            return await session.insert(lattice, field)

    async def get(self, principal: Principal, lattice_id: str) -> LatticeRecord:
        """The lattice; another tenant's lattice is NotFound like a missing one."""
        record = await self._store.get(principal.tenant_id, parse_id(lattice_id))
        if record is None:
            raise NotFound(LATTICE_NOT_FOUND)
        return record

    async def list_page(
        self, principal: Principal, *, page_size: int, page_token: str
    ) -> LatticePage:
        """One page, newest first, and the token of the next page ('' on the last page)."""
        limit = paging.page_size(page_size)
        after = paging.decode_page_token(page_token)
        # One extra row tells whether another page follows without a second query.
        rows = await self._store.list_lattices(principal.tenant_id, limit=limit + 1, after=after)
        page, more = rows[:limit], len(rows) > limit
        token = paging.encode_page_token(Cursor(page[-1].created_at, page[-1].id)) if more else ""
        return LatticePage(lattices=page, next_page_token=token)

    async def delete(self, principal: Principal, lattice_id: str) -> None:
        """Deletes the lattice and its field."""
        if not await self._store.delete(principal.tenant_id, parse_id(lattice_id)):
            raise NotFound(LATTICE_NOT_FOUND)
