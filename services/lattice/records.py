"""Lattice records and the storage the lattice domain needs, as Protocols (PostgreSQL in
production: store.py; in memory in the unit tests)."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.common.errors import InvalidArgument
from services.common.paging import Cursor
from services.lattice.engine.geometry import Grid
from services.lattice.engine.shapes import Shape
from services.lattice.fields import EncodedField

LATTICE_NOT_FOUND = "lattice not found"


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
    # Blocked vertices at this version; None when unknown (lattices older than the column).
    blocked_count: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def grid(self) -> Grid:
        return Grid(self.dimensions, self.size)


@dataclass(frozen=True)
class NewLattice:
    """What the domain decided about a lattice about to be inserted."""

    id: str
    name: str
    shape: Shape


@dataclass(frozen=True)
class OutboxEvent:
    """An event to write to the outbox, in the transaction of the change it announces."""

    id: str
    type: str
    data: dict[str, object]


def parse_id(value: str, field: str = "id") -> str:
    """The canonical form of a UUID, or InvalidArgument naming `field`."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(field, "is not a valid lattice id") from None


class LatticeTransaction(Protocol):
    """One open tenant transaction: committed when its block ends normally, else rolled back."""

    async def lock_tenant(self) -> str | None:
        """Locks the tenant's row until the transaction ends and returns its plan (None: gone)."""

    async def count_lattices(self) -> int:
        """How many lattices the tenant holds now."""

    async def insert(self, lattice: NewLattice, field: EncodedField) -> LatticeRecord:
        """Inserts the lattice at version 1 with its field."""

    async def lock_lattice(self, lattice_id: str) -> LatticeRecord | None:
        """The lattice, locked until the transaction ends (None: not in this tenant)."""

    async def read_field(self, lattice_id: str) -> tuple[int, EncodedField] | None:
        """The stored field and its version."""

    async def save_field(self, lattice_id: str, field: EncodedField) -> LatticeRecord:
        """Replaces the field, adds 1 to the version, sets checksum and blocked count."""

    async def delete(self, lattice_id: str) -> LatticeRecord | None:
        """Deletes the lattice and its field; returns what was deleted (None: nothing)."""

    async def add_event(self, event: OutboxEvent) -> None:
        """Writes the event to the outbox, committed with everything else or not at all."""


class LatticeStore(Protocol):
    """Persistence of lattices, their fields and their events."""

    def transaction(
        self, tenant_id: str, *, lock_timeout_s: float | None = None
    ) -> AbstractAsyncContextManager[LatticeTransaction]:
        """A tenant transaction; waiting for a row lock longer than `lock_timeout_s` raises
        DeadlineExceeded."""

    async def get(self, tenant_id: str, lattice_id: str) -> LatticeRecord | None:
        """The lattice, if it exists in that tenant."""

    async def get_with_field(
        self, tenant_id: str, lattice_id: str
    ) -> tuple[LatticeRecord, EncodedField] | None:
        """The lattice and its stored field, read together (the same version)."""

    async def list_lattices(
        self, tenant_id: str, *, limit: int, after: Cursor | None
    ) -> list[LatticeRecord]:
        """Up to `limit` lattices newest first, starting strictly after `after`."""

    async def add_event(self, tenant_id: str, event: OutboxEvent) -> bool:
        """Writes one event in a transaction of its own (for computations that change nothing);
        False when it was not written because no webhook wants it."""
