"""PostgreSQL persistence of events, deliveries and the delivery log, in tenant transactions."""

from __future__ import annotations

from typing import Any

from services.common.db import Connection, Database
from services.common.paging import Cursor
from services.webhook.deliveries import DeliveryRecord, Published, QueueRefusal
from services.webhook.events import ALL_EVENTS, NewEvent
from services.webhook.policy import AttemptStatus

# Queues event %(event)s to the endpoints `targets` selects (locked against a concurrent delete
# until commit) and writes each delivery's first, PENDING, log row. {where} is a constant.
_QUEUE = """
WITH targets AS (
  SELECT id, ordered FROM webhooks WHERE tenant_id = %(tenant)s AND {where} FOR KEY SHARE
), queued AS (
  INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, ordered, next_attempt_at)
  SELECT gen_random_uuid(), %(tenant)s, id, %(event)s, ordered,
         now() + make_interval(secs => %(delay)s)
  FROM targets
  RETURNING id, webhook_id, created_at, next_attempt_at
), logged AS (
  INSERT INTO webhook_attempts (id, tenant_id, delivery_id, webhook_id, number, created_at)
  SELECT gen_random_uuid(), %(tenant)s, id, webhook_id, 1, created_at FROM queued
  RETURNING id, delivery_id
)
SELECT l.id::text AS log_id, l.delivery_id::text AS id, q.created_at, q.next_attempt_at
FROM logged l JOIN queued q ON q.id = l.delivery_id
"""
_SUBSCRIBED = "enabled AND event_types && %(types)s::text[] AND id IS DISTINCT FROM %(exclude)s"
_ONE_ENDPOINT = "id = %(webhook)s"

_LOG_COLUMNS = """
a.id::text AS log_id, a.delivery_id::text AS id, d.event_id, e.type AS event_type, a.status,
a.number, a.response_status, a.response_body, a.error, a.next_attempt_at, a.attempted_at,
a.created_at, d.next_attempt_at AS due_at, d.paused
"""


async def insert_event(conn: Connection, tenant_id: str, event: NewEvent) -> bool:
    """Stores the event; False when its id exists already (in any tenant)."""
    cur = await conn.execute(
        "INSERT INTO webhook_events (id, tenant_id, type, payload) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING",
        (event.id, tenant_id, event.type, event.body),
    )
    return cur.rowcount == 1


async def queue_subscribed(
    conn: Connection,
    tenant_id: str,
    event: NewEvent,
    first_delay_s: float,
    *,
    exclude_webhook: str | None = None,
) -> int:
    """Queues a stored event to the tenant's enabled endpoints subscribed to its type."""
    cur = await conn.execute(
        _QUEUE.format(where=_SUBSCRIBED),
        {
            "tenant": tenant_id,
            "event": event.id,
            "delay": first_delay_s,
            "types": [event.type, ALL_EVENTS],
            "exclude": exclude_webhook,
        },
    )
    return len(await cur.fetchall())


def log_record(row: dict[str, Any]) -> DeliveryRecord:
    """A log row as the API shows it."""
    status = AttemptStatus(row["status"])
    pending = status is AttemptStatus.PENDING
    return DeliveryRecord(
        id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=status,
        attempt=row["number"] - 1 if pending else row["number"],
        response_status=row["response_status"],
        error=row["error"],
        # While queued the delivery's due time is the truth (rate limits move it); a paused
        # delivery is due at no particular time.
        next_attempt_at=(None if row["paused"] else row["due_at"])
        if pending
        else row["next_attempt_at"],
        created_at=row["created_at"],
        response_body=row["response_body"],
        attempted_at=row["attempted_at"],
        log_id=row["log_id"],
    )


class PostgresDeliveryStore:
    """DeliveryStore on PostgreSQL; every statement runs in the tenant's transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def publish(self, tenant_id: str, event: NewEvent, first_delay_s: float) -> Published:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant_id,))
            if await cur.fetchone() is None:
                return Published(queued=0, tenant_found=False)
            if not await insert_event(conn, tenant_id, event):
                return Published(queued=0)
            return Published(queued=await queue_subscribed(conn, tenant_id, event, first_delay_s))

    async def queue_to_endpoint(
        self,
        tenant_id: str,
        webhook_id: str,
        first_delay_s: float,
        *,
        event: NewEvent | None = None,
        delivery_id: str | None = None,
    ) -> DeliveryRecord | QueueRefusal:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(
                "SELECT enabled FROM webhooks WHERE id = %s FOR KEY SHARE", (webhook_id,)
            )
            webhook = await cur.fetchone()
            if webhook is None:
                return QueueRefusal.NO_WEBHOOK
            if event is not None:
                event_id, event_type = event.id, event.type
            else:
                cur = await conn.execute(
                    "SELECT d.event_id, e.type FROM webhook_deliveries d"
                    " JOIN webhook_events e ON e.id = d.event_id"
                    " WHERE d.id = %s AND d.webhook_id = %s",
                    (delivery_id, webhook_id),
                )
                found = await cur.fetchone()
                if found is None:
                    return QueueRefusal.NO_DELIVERY
                event_id, event_type = found["event_id"], found["type"]
            if not webhook["enabled"]:
                return QueueRefusal.DISABLED
            if event is not None:
                await insert_event(conn, tenant_id, event)
            cur = await conn.execute(
                _QUEUE.format(where=_ONE_ENDPOINT),
                {
                    "tenant": tenant_id,
                    "event": event_id,
                    "delay": first_delay_s,
                    "webhook": webhook_id,
                },
            )
            row = await cur.fetchone()
        if row is None:
            raise RuntimeError("queueing to a locked endpoint returned no row")
        return DeliveryRecord(
            id=row["id"],
            event_id=event_id,
            event_type=event_type,
            status=AttemptStatus.PENDING,
            attempt=0,
            response_status=0,
            error="",
            next_attempt_at=row["next_attempt_at"],
            created_at=row["created_at"],
            log_id=row["log_id"],
        )

    async def list_log(
        self, tenant_id: str, webhook_id: str, *, limit: int, after: Cursor | None
    ) -> list[DeliveryRecord] | None:
        where = "a.tenant_id = %s AND a.webhook_id = %s"
        params: tuple[object, ...] = (tenant_id, webhook_id)
        if after is not None:
            where += " AND (a.created_at, a.id) < (%s, %s)"
            params += (after.created_at, after.id)
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute("SELECT 1 FROM webhooks WHERE id = %s", (webhook_id,))
            if await cur.fetchone() is None:
                return None
            cur = await conn.execute(
                f"SELECT {_LOG_COLUMNS} FROM webhook_attempts a"  # noqa: S608
                " JOIN webhook_deliveries d ON d.id = a.delivery_id"
                " JOIN webhook_events e ON e.id = d.event_id"
                f" WHERE {where} ORDER BY a.created_at DESC, a.id DESC LIMIT %s",
                (*params, limit),
            )
            rows = await cur.fetchall()
        return [log_record(row) for row in rows]
