"""PostgreSQL persistence for the lattice domain, under row-level security."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from services.common.db import Connection, Database
from services.common.paging import Cursor, newest_first_query
from services.lattice.catalog import LatticeRecord, NewLattice
from services.lattice.fields import EncodedField

_COLUMNS = (
    "id::text, name, dimensions, size, vertex_count, edge_count, version, checksum,"
    " created_at, updated_at"
)
FIRST_VERSION = 1


def _lattice(row: dict[str, Any]) -> LatticeRecord:
    return LatticeRecord(
        id=row["id"],
        name=row["name"],
        dimensions=row["dimensions"],
        size=row["size"],
        vertex_count=row["vertex_count"],
        edge_count=row["edge_count"],
        version=row["version"],
        checksum=row["checksum"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class _PostgresCreation:
    """CreationSession on one open tenant transaction."""

    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant_id = tenant_id

    async def lock_tenant(self) -> str | None:
        cur = await self._conn.execute(
            "SELECT plan FROM tenants WHERE id = %s FOR UPDATE", (self._tenant_id,)
        )
        row = await cur.fetchone()
        return str(row["plan"]) if row else None

    async def count_lattices(self) -> int:
        cur = await self._conn.execute(
            "SELECT count(*) AS n FROM lattices WHERE tenant_id = %s", (self._tenant_id,)
        )
        row = await cur.fetchone()
        return int(row["n"]) if row else 0

    async def insert(self, lattice: NewLattice, field: EncodedField) -> LatticeRecord:
        shape = lattice.shape
        cur = await self._conn.execute(
            "INSERT INTO lattices (id, tenant_id, name, dimensions, size, vertex_count,"  # noqa: S608
            " edge_count, version, checksum) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" RETURNING {_COLUMNS}",
            (
                lattice.id,
                self._tenant_id,
                lattice.name,
                shape.dimensions,
                shape.size,
                shape.vertex_count,
                shape.edge_count,
                FIRST_VERSION,
                field.checksum,
            ),
        )
        row = await cur.fetchone()
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        await self._conn.execute(
            "INSERT INTO lattice_fields (lattice_id, tenant_id, version, checksum, encoding, data)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (
                lattice.id,
                self._tenant_id,
                FIRST_VERSION,
                field.checksum,
                field.encoding,
                field.data,
            ),
        )
        return _lattice(row)


class PostgresLatticeStore:
    """LatticeStore on PostgreSQL; every statement runs in the tenant's transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def creation(self, tenant_id: str) -> AsyncIterator[_PostgresCreation]:
        async with self._db.tenant_transaction(tenant_id) as conn:
            yield _PostgresCreation(conn, tenant_id)

    async def get(self, tenant_id: str, lattice_id: str) -> LatticeRecord | None:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM lattices WHERE id = %s",  # noqa: S608
                (lattice_id,),
            )
            row = await cur.fetchone()
        return _lattice(row) if row else None

    async def list_lattices(
        self, tenant_id: str, *, limit: int, after: Cursor | None
    ) -> list[LatticeRecord]:
        query, params = newest_first_query(
            _COLUMNS, "lattices", tenant_id, limit=limit, after=after
        )
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        return [_lattice(row) for row in rows]

    async def delete(self, tenant_id: str, lattice_id: str) -> bool:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute("DELETE FROM lattices WHERE id = %s", (lattice_id,))
            return cur.rowcount > 0
