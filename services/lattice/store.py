"""PostgreSQL persistence for the lattice domain, under row-level security."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from services.common import audit
from services.common.db import Connection, Database
from services.common.errors import DeadlineExceeded
from services.common.local_cache import MISSING, LocalCache
from services.common.paging import Cursor, newest_first_query
from services.common.subscriptions import Subscriptions
from services.lattice.changes import LatticeChanges, changed_key
from services.lattice.fields import EncodedField
from services.lattice.records import LatticeRecord, NewLattice, OutboxEvent

_COLUMNS = (
    "id::text, name, dimensions, size, vertex_count, edge_count, version, checksum,"
    " blocked_count, created_at, updated_at"
)
_L_COLUMNS = ", ".join(f"l.{c.strip()}" for c in _COLUMNS.split(","))
FIRST_VERSION = 1
LOCK_WAIT_TOO_LONG = "the lattice is busy with another transform; the deadline passed waiting"


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
        blocked_count=row["blocked_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _field(row: dict[str, Any]) -> EncodedField:
    return EncodedField(
        checksum=row["field_checksum"],
        encoding=row["encoding"],
        data=row["data"],
        blocked_count=row["blocked_count"],
    )


INSERT_EVENT = (
    "INSERT INTO lattice_outbox (id, tenant_id, event_type, data) VALUES (%s, %s, %s, %s)"
)


def event_params(tenant_id: str, event: OutboxEvent) -> tuple[object, ...]:
    return (event.id, tenant_id, event.type, Jsonb(event.data))


async def wanted(subscriptions: Subscriptions | None, tenant_id: str, event: OutboxEvent) -> bool:
    """Whether a webhook may want the event (always, without `subscriptions`)."""
    return subscriptions is None or await subscriptions.wants(tenant_id, event.type)


async def insert_event(conn: Connection, tenant_id: str, event: OutboxEvent) -> None:
    await conn.execute(INSERT_EVENT, event_params(tenant_id, event))


class _PostgresTransaction:
    """LatticeTransaction on one open tenant transaction."""

    def __init__(
        self, conn: Connection, tenant_id: str, subscriptions: Subscriptions | None = None
    ) -> None:
        self._conn = conn
        self._tenant_id = tenant_id
        self._subscriptions = subscriptions
        # Lattices whose row this transaction changed: the replicas' caches must hear of them.
        self.changed: list[str] = []

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
            " edge_count, version, checksum, blocked_count)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
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
                field.blocked_count,
            ),
        )
        row = await cur.fetchone()
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        # %b: the bytes travel in binary, not as hex text twice their size.
        await self._conn.execute(
            "INSERT INTO lattice_fields (lattice_id, tenant_id, version, checksum, encoding, data)"
            " VALUES (%s, %s, %s, %s, %s, %b)",
            (
                lattice.id,
                self._tenant_id,
                FIRST_VERSION,
                field.checksum,
                field.encoding,
                field.data,
            ),
        )
        await audit.record(
            self._conn,
            self._tenant_id,
            audit.AuditEvent(
                "lattice.create",
                "lattice",
                lattice.id,
                details={"dimensions": shape.dimensions, "size": shape.size},
            ),
        )
        return _lattice(row)

    async def lock_lattice(self, lattice_id: str) -> LatticeRecord | None:
        try:
            cur = await self._conn.execute(
                f"SELECT {_COLUMNS} FROM lattices WHERE id = %s FOR UPDATE",  # noqa: S608
                (lattice_id,),
            )
        except psycopg.errors.LockNotAvailable:
            raise DeadlineExceeded(LOCK_WAIT_TOO_LONG) from None
        row = await cur.fetchone()
        return _lattice(row) if row else None

    async def read_field(self, lattice_id: str) -> tuple[int, EncodedField] | None:
        cur = await self._conn.execute(
            "SELECT f.version, f.checksum AS field_checksum, f.encoding, f.data, l.blocked_count"
            " FROM lattice_fields f JOIN lattices l ON l.id = f.lattice_id"
            " WHERE f.lattice_id = %s",
            (lattice_id,),
            binary=True,
        )
        row = await cur.fetchone()
        return (int(row["version"]), _field(row)) if row else None

    async def save_field(self, lattice_id: str, field: EncodedField) -> LatticeRecord:
        cur = await self._conn.execute(
            "UPDATE lattices SET version = version + 1, checksum = %s, blocked_count = %s,"  # noqa: S608
            f" updated_at = now() WHERE id = %s RETURNING {_COLUMNS}",
            (field.checksum, field.blocked_count, lattice_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise RuntimeError("the locked lattice disappeared inside its transaction")
        self.changed.append(lattice_id)
        await self._conn.execute(
            "UPDATE lattice_fields SET version = %s, checksum = %s, encoding = %s, data = %b"
            " WHERE lattice_id = %s",
            (row["version"], field.checksum, field.encoding, field.data, lattice_id),
        )
        return _lattice(row)

    async def delete(self, lattice_id: str) -> LatticeRecord | None:
        cur = await self._conn.execute(
            f"DELETE FROM lattices WHERE id = %s RETURNING {_COLUMNS}",  # noqa: S608
            (lattice_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        self.changed.append(lattice_id)
        await audit.record(
            self._conn, self._tenant_id, audit.AuditEvent("lattice.delete", "lattice", lattice_id)
        )
        return _lattice(row)

    async def add_event(self, event: OutboxEvent) -> None:
        if await wanted(self._subscriptions, self._tenant_id, event):
            await insert_event(self._conn, self._tenant_id, event)


class PostgresLatticeStore:
    """LatticeStore on PostgreSQL; every statement runs in the tenant's transaction.

    A connection the pool cannot hand out in time, or a connection lost mid-request, is
    Unavailable (503: retry), not an internal error: Database maps it (db.database_errors).
    """

    def __init__(
        self,
        db: Database,
        *,
        metadata: LocalCache[tuple[str, LatticeRecord]] | None = None,
        changes: LatticeChanges | None = None,
        subscriptions: Subscriptions | None = None,
    ) -> None:
        """`metadata`: this replica's cache of lattices' rows (by changed_key), kept current by
        the invalidation feed. `changes`: how every changing transaction tells the replicas'
        caches (changes.py); needed wherever any replica caches, whether this one does or not.
        `subscriptions`: events no webhook subscribes to are not written (ADR 69).
        """
        self._db = db
        self._subscriptions = subscriptions
        self._metadata = metadata
        self._changes = changes

    @asynccontextmanager
    async def _tenant(self, tenant_id: str) -> AsyncIterator[Connection]:
        async with self._db.tenant_transaction(tenant_id) as conn:
            yield conn

    @asynccontextmanager
    async def transaction(
        self, tenant_id: str, *, lock_timeout_s: float | None = None
    ) -> AsyncIterator[_PostgresTransaction]:
        async with self._tenant(tenant_id) as conn:
            if lock_timeout_s is not None:
                # Transaction-local; at least 1 ms, since 0 would mean "wait forever".
                milliseconds = max(1, int(lock_timeout_s * 1000))
                await conn.execute(
                    "SELECT set_config('lock_timeout', %s, true)", (f"{milliseconds}ms",)
                )
            tx = _PostgresTransaction(conn, tenant_id, self._subscriptions)
            yield tx
            if tx.changed and self._changes is not None:
                await self._changes.before_commit(tx.changed)
        if tx.changed and self._changes is not None:
            await self._changes.after_commit(tx.changed)

    async def _statement(
        self, tenant_id: str, query: str, params: Sequence[object]
    ) -> list[DictRow]:
        """One statement under the tenant's RLS in one round trip (Database.tenant_statement)."""
        return await self._db.tenant_statement(tenant_id, query, params)

    async def get(self, tenant_id: str, lattice_id: str) -> LatticeRecord | None:
        cache = self._metadata
        if cache is None:
            return await self._read(tenant_id, lattice_id)
        key = changed_key(lattice_id)
        found = cache.get(key)
        # Kept with the tenant that read it under RLS: another tenant's lookup reads the
        # database, where RLS answers it.
        if found is not MISSING and found[0] == tenant_id:  # type: ignore[index]
            return found[1]  # type: ignore[index,no-any-return]
        ticket = cache.begin(key)
        record: LatticeRecord | None = None
        try:
            record = await self._read(tenant_id, lattice_id)
        finally:
            cache.finish(ticket, MISSING if record is None else (tenant_id, record))
        return record

    async def _read(self, tenant_id: str, lattice_id: str) -> LatticeRecord | None:
        rows = await self._statement(
            tenant_id,
            f"SELECT {_COLUMNS} FROM lattices WHERE id = %s",  # noqa: S608
            (lattice_id,),
        )
        return _lattice(rows[0]) if rows else None

    async def get_with_field(
        self, tenant_id: str, lattice_id: str
    ) -> tuple[LatticeRecord, EncodedField] | None:
        # One statement, one snapshot: the metadata and the field are of the same version.
        async with self._tenant(tenant_id) as conn:
            cur = await conn.execute(
                f"SELECT {_L_COLUMNS}, f.checksum AS field_checksum, f.encoding, f.data"  # noqa: S608
                " FROM lattices l JOIN lattice_fields f ON f.lattice_id = l.id WHERE l.id = %s",
                (lattice_id,),
                binary=True,
            )
            row = await cur.fetchone()
        return (_lattice(row), _field(row)) if row else None

    async def list_lattices(
        self, tenant_id: str, *, limit: int, after: Cursor | None
    ) -> list[LatticeRecord]:
        query, params = newest_first_query(
            _COLUMNS, "lattices", tenant_id, limit=limit, after=after
        )
        return [_lattice(row) for row in await self._statement(tenant_id, query, params)]

    async def add_event(self, tenant_id: str, event: OutboxEvent) -> bool:
        if not await wanted(self._subscriptions, tenant_id, event):
            return False
        # One statement, atomic on its own: one round trip.
        await self._statement(tenant_id, INSERT_EVENT, event_params(tenant_id, event))
        return True
