"""The outbox table as the relay sees it.

Finding the tenants with events due, and measuring the backlog for the metrics, are the relay's
only cross-tenant statements: reads in `lookup_transaction(outbox_relay='lattice')`, which the
read-only lattice_outbox_relay_read policy of migration 0007 matches. Everything else (claiming,
marking sent, backing off, pruning) runs in the tenant's own transaction under the ordinary
isolation policy, and may change only the bookkeeping columns (column grants).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common.db import Database
from services.lattice.metrics import Backlog
from services.lattice.outbox import PendingEvent

RELAY_LOOKUP = {"outbox_relay": "lattice"}
# First key of pg_advisory_xact_lock(int, int) for claims; the second is the tenant's hash.
CLAIM_LOCK_CLASS = 0x4C4F5458  # "LOTX"
# Sent events are kept this long (for operators: what was published, when), then pruned.
SENT_RETENTION_S = 3600.0


class PostgresOutbox:
    """OutboxStore on PostgreSQL."""

    def __init__(self, db: Database, *, sent_retention_s: float = SENT_RETENTION_S) -> None:
        self._db = db
        self._retention_s = sent_retention_s

    async def due_tenants(self, limit: int) -> list[str]:
        async with self._db.lookup_transaction(**RELAY_LOOKUP) as conn:
            cur = await conn.execute(
                "SELECT tenant_id::text AS tenant_id FROM lattice_outbox"
                " WHERE sent_at IS NULL AND next_attempt_at <= clock_timestamp()"
                " GROUP BY tenant_id ORDER BY min(seq) LIMIT %s",
                (limit,),
            )
            rows = await cur.fetchall()
        return [row["tenant_id"] for row in rows]

    async def backlog(self) -> Backlog:
        # Cross-tenant, so read under the relay's read-only policy like due_tenants. The rows
        # counted are those of the partial indexes (sent_at IS NULL): the work is the backlog's
        # size, however many sent events the table keeps.
        async with self._db.lookup_transaction(**RELAY_LOOKUP) as conn:
            cur = await conn.execute(
                "SELECT count(*) AS pending, coalesce(extract(epoch FROM"
                " clock_timestamp() - min(occurred_at)), 0)::float8 AS oldest"
                " FROM lattice_outbox WHERE sent_at IS NULL"
            )
            row = await cur.fetchone()
        if row is None:
            return Backlog(0, 0.0)
        return Backlog(int(row["pending"]), max(0.0, float(row["oldest"])))

    async def claim(self, tenant_id: str, limit: int, lease_s: float) -> list[PendingEvent]:
        async with self._db.tenant_transaction(tenant_id) as conn:
            # Claims of one tenant take turns (they are short), so each sees the leases the one
            # before it committed and no two relays hold events of one tenant at once.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s::int, hashtext(%s))", (CLAIM_LOCK_CLASS, tenant_id)
            )
            cur = await conn.execute(
                "UPDATE lattice_outbox SET next_attempt_at = clock_timestamp()"
                "   + make_interval(secs => %s)"
                " WHERE id IN (SELECT o.id FROM lattice_outbox o"
                "   WHERE o.tenant_id = %s AND o.sent_at IS NULL"
                "   AND o.next_attempt_at <= clock_timestamp()"
                # Per-tenant order: nothing overtakes an older event that waits for a retry or
                # is held by another relay.
                "   AND NOT EXISTS (SELECT 1 FROM lattice_outbox p WHERE p.tenant_id = o.tenant_id"
                "     AND p.sent_at IS NULL AND p.seq < o.seq"
                "     AND p.next_attempt_at > clock_timestamp())"
                "   ORDER BY o.seq LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id::text, tenant_id::text, event_type, data, occurred_at, attempts,"
                "   seq",
                (lease_s, tenant_id, limit),
            )
            rows = await cur.fetchall()
        rows.sort(key=lambda row: row["seq"])
        return [
            PendingEvent(
                id=row["id"],
                tenant_id=row["tenant_id"],
                type=row["event_type"],
                data=row["data"],
                occurred_at=row["occurred_at"],
                attempts=row["attempts"],
            )
            for row in rows
        ]

    async def delivered(self, tenant_id: str, event_ids: Sequence[str]) -> None:
        async with self._db.tenant_transaction(tenant_id) as conn:
            if self._retention_s <= 0:
                await conn.execute(
                    "DELETE FROM lattice_outbox WHERE id = ANY(%s::uuid[])", (list(event_ids),)
                )
                return
            await conn.execute(
                "UPDATE lattice_outbox SET sent_at = clock_timestamp() WHERE id = ANY(%s::uuid[])",
                (list(event_ids),),
            )
            await conn.execute(
                "DELETE FROM lattice_outbox WHERE tenant_id = %s AND sent_at IS NOT NULL"
                " AND sent_at < clock_timestamp() - make_interval(secs => %s)",
                (tenant_id, self._retention_s),
            )

    async def retry_later(
        self,
        tenant_id: str,
        event_ids: Sequence[str],
        delay_s: float,
        *,
        error: str,
        count_attempt: bool,
    ) -> None:
        async with self._db.tenant_transaction(tenant_id) as conn:
            await conn.execute(
                "UPDATE lattice_outbox SET"
                " next_attempt_at = clock_timestamp() + make_interval(secs => %s),"
                " attempts = attempts + %s, last_error = %s"
                " WHERE id = ANY(%s::uuid[])",
                (delay_s, 1 if count_attempt else 0, error, list(event_ids)),
            )
