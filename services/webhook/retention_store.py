"""Retention in PostgreSQL (services/webhook/retention.py says what goes and what stays).

Finding old events is the one cross-tenant read: it runs in
`lookup_transaction(webhook_retention='on')`, which the read-only webhook_events_retention_read
policy of migration 0008 matches. Deleting happens in each tenant's own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common.db import Database
from services.webhook.retention import OldEvent, Pruned

RETENTION_LOOKUP = {"webhook_retention": "on"}

_OLD = "created_at < now() - make_interval(secs => %s)"
_FIRST_OLD_EVENTS = f"""
SELECT id, tenant_id::text AS tenant_id, created_at FROM webhook_events
WHERE {_OLD} ORDER BY created_at, id LIMIT %s
"""  # noqa: S608 (constants only)
_NEXT_OLD_EVENTS = f"""
SELECT id, tenant_id::text AS tenant_id, created_at FROM webhook_events
WHERE {_OLD} AND (created_at, id) > (%s, %s) ORDER BY created_at, id LIMIT %s
"""  # noqa: S608 (constants only)

# Deliveries that ended long enough ago; rows another transaction holds are left for a later
# pass (no waiting, so no deadlock with the worker or another replica). Their attempts go by
# ON DELETE CASCADE.
_DELETE_DELIVERIES = """
DELETE FROM webhook_deliveries WHERE id IN (
  SELECT id FROM webhook_deliveries
  WHERE tenant_id = %s AND event_id = ANY(%s) AND status IN ('SUCCEEDED', 'DEAD')
    AND updated_at < now() - make_interval(secs => %s)
  FOR UPDATE SKIP LOCKED)
"""
# The old events are locked before anything is decided about them: a delivery queued for one
# (a resend) from now on waits for this transaction (its foreign key check needs the row), and
# one queued earlier holds the row (skipped here) or has committed (seen by the next statement).
_LOCK_EVENTS = f"""
SELECT id FROM webhook_events WHERE tenant_id = %s AND id = ANY(%s) AND {_OLD}
FOR UPDATE SKIP LOCKED
"""  # noqa: S608 (constants only)
_DELETE_EVENTS = """
DELETE FROM webhook_events e
WHERE e.tenant_id = %s AND e.id = ANY(%s)
  AND NOT EXISTS (
    SELECT FROM webhook_deliveries d WHERE d.tenant_id = e.tenant_id AND d.event_id = e.id)
"""


class PostgresRetention:
    """RetentionStore on PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def old_events(
        self, older_than_s: float, *, after: OldEvent | None, limit: int
    ) -> list[OldEvent]:
        async with self._db.lookup_transaction(**RETENTION_LOOKUP) as conn:
            if after is None:
                cur = await conn.execute(_FIRST_OLD_EVENTS, (older_than_s, limit))
            else:
                cur = await conn.execute(
                    _NEXT_OLD_EVENTS, (older_than_s, after.created_at, after.id, limit)
                )
            rows = await cur.fetchall()
        return [OldEvent(row["id"], row["tenant_id"], row["created_at"]) for row in rows]

    async def prune(self, tenant_id: str, event_ids: Sequence[str], older_than_s: float) -> Pruned:
        ids = list(event_ids)
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(_DELETE_DELIVERIES, (tenant_id, ids, older_than_s))
            deliveries = cur.rowcount
            cur = await conn.execute(_LOCK_EVENTS, (tenant_id, ids, older_than_s))
            locked = [row["id"] for row in await cur.fetchall()]
            events = 0
            if locked:
                cur = await conn.execute(_DELETE_EVENTS, (tenant_id, locked))
                events = cur.rowcount
        return Pruned(deliveries=deliveries, events=events)
