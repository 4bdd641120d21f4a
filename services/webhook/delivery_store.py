"""PostgreSQL persistence of events, deliveries and the delivery log, in tenant transactions."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from services.common import audit
from services.common.db import Connection, Database
from services.common.paging import Cursor
from services.webhook.batching import GroupCommit
from services.webhook.deliveries import DeliveryRecord, Published, QueueRefusal
from services.webhook.events import ALL_EVENTS, NewEvent
from services.webhook.policy import AttemptStatus
from services.webhook.secret_box import SecretBox
from services.webhook.worker import Claim, Job

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
# PublishEvent for a batch of events of one tenant, in one statement: the tenant must exist;
# each event is stored unless its id is (idempotence); only newly stored events are queued to
# the subscribed endpoints (locked against a concurrent delete until commit), in publication
# order, each delivery with its first, PENDING, log row. Up to %(lease_limit)s of the new
# deliveries that are due at once and not on an ordered endpoint are leased to the local worker
# (token %(token)s) and come back as `jobs`, with what their attempts need. One row per input
# event, in order.
_PUBLISH = """
WITH input AS (
  SELECT i.n, i.id, i.type, i.delay, p.payload
  FROM json_to_recordset(%(events)s::json) AS i(n bigint, id text, type text, delay float8)
  JOIN unnest(%(payloads)s::bytea[]) WITH ORDINALITY AS p(payload, n) ON p.n = i.n
), tenant AS (
  SELECT id FROM tenants WHERE id = %(tenant)s
), stored AS (
  INSERT INTO webhook_events (id, tenant_id, type, payload)
  SELECT i.id, t.id, i.type, i.payload FROM input i CROSS JOIN tenant t ORDER BY i.n
  ON CONFLICT (id) DO NOTHING
  RETURNING id
), targets AS (
  SELECT w.id AS webhook_id, w.ordered, w.url, w.secret, w.secret_sealed,
         CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret END
           AS previous_secret,
         CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret_sealed END
           AS previous_secret_sealed,
         w.failing_since, i.id AS event_id, i.delay, i.n
  FROM stored s
  JOIN input i ON i.id = s.id
  JOIN webhooks w ON w.tenant_id = %(tenant)s AND w.enabled
    AND w.event_types && ARRAY[i.type, '*']::text[]
  FOR KEY SHARE OF w
), ranked AS (
  SELECT t.*, NOT t.ordered AND t.delay <= 0 AND row_number() OVER (
    PARTITION BY NOT t.ordered AND t.delay <= 0 ORDER BY t.n, t.webhook_id
  ) <= %(lease_limit)s AS leased
  FROM targets t
), queued AS (
  INSERT INTO webhook_deliveries
    (id, tenant_id, webhook_id, event_id, ordered, next_attempt_at, locked_until, lease_token)
  SELECT gen_random_uuid(), %(tenant)s, webhook_id, event_id, ordered,
         now() + make_interval(secs => delay),
         CASE WHEN leased THEN now() + make_interval(secs => %(lease_s)s) END,
         CASE WHEN leased THEN %(token)s::uuid END
  FROM ranked ORDER BY n, webhook_id
  RETURNING id, webhook_id, event_id, created_at, lease_token IS NOT NULL AS leased
), logged AS (
  INSERT INTO webhook_attempts (id, tenant_id, delivery_id, webhook_id, number, created_at)
  SELECT gen_random_uuid(), %(tenant)s, id, webhook_id, 1, created_at FROM queued
), per_event AS (
  SELECT q.event_id, count(*) AS queued,
         json_agg(json_build_object(
           'delivery_id', q.id, 'webhook_id', q.webhook_id, 'url', r.url, 'secret', r.secret,
           'secret_sealed', encode(r.secret_sealed, 'base64'),
           'previous_secret', r.previous_secret,
           'previous_secret_sealed', encode(r.previous_secret_sealed, 'base64'),
           'failing_since', r.failing_since
         )) FILTER (WHERE q.leased) AS jobs
  FROM queued q JOIN ranked r ON r.event_id = q.event_id AND r.webhook_id = q.webhook_id
  GROUP BY q.event_id
)
SELECT EXISTS (SELECT FROM tenant) AS tenant_found, coalesce(p.queued, 0) AS queued, p.jobs
FROM input i LEFT JOIN per_event p ON p.event_id = i.id
ORDER BY i.n
"""
# Publication hands the local worker at most this many deliveries per event it publishes
# (an event fans out to that many endpoints before the rest wait for a claim).
HAND_OVER_PER_EVENT = 4
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


def _bytes(value: str | None) -> bytes | None:
    # bytea in the statement's JSON is base64, which PostgreSQL wraps every 76 characters.
    return base64.b64decode(value) if value is not None else None


def _leased_job(
    tenant_id: str, token: str, event: NewEvent, job: dict[str, Any], box: SecretBox
) -> Job:
    """A delivery leased at publication, from the statement's JSON, as the worker runs it."""
    failing_since = job["failing_since"]
    secrets = box.live_secrets(
        tenant_id,
        job["webhook_id"],
        current=job["secret"],
        current_sealed=_bytes(job["secret_sealed"]),
        previous=job["previous_secret"],
        previous_sealed=_bytes(job["previous_secret_sealed"]),
    )
    return Job(
        claim=Claim(job["delivery_id"], tenant_id, token),
        webhook_id=job["webhook_id"],
        url=job["url"],
        enabled=True,
        ordered=False,
        secrets=secrets,
        failing_since=datetime.fromisoformat(failing_since) if failing_since else None,
        event_id=event.id,
        event_type=event.type,
        body=event.body,
        attempts_made=0,
    )


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


class LocalWorker(Protocol):
    """The delivery worker of this process, as publication hands it new deliveries."""

    @property
    def lease_s(self) -> float:
        """How long a lease lasts unless renewed."""

    def reserve(self, wanted: int) -> int:
        """Promises up to `wanted` slots; how many it promised (0: claim them as usual)."""

    def hand_over(self, jobs: Sequence[Job], reserved: int) -> None:
        """Starts `jobs` (leased to it) and ends the promise of `reserved` slots."""


class PostgresDeliveryStore:
    """DeliveryStore on PostgreSQL; every statement runs in the tenant's transaction.

    Concurrent publications of one tenant are written together (services/webhook/batching.py).
    With a `worker`, new deliveries it has room for are leased to it as they are queued and
    handed over after commit, instead of waiting for its next claim; leased and committed in
    one transaction, they are as safe as claimed ones (a lost worker's lease runs out).
    """

    def __init__(self, db: Database, box: SecretBox, *, worker: LocalWorker | None = None) -> None:
        self._db = db
        # Opens the endpoints' sealed secrets for the deliveries handed to the worker.
        self._box = box
        self._worker = worker
        self._publications: GroupCommit[tuple[NewEvent, float], Published] = GroupCommit(
            self._publish_batch
        )

    async def publish(self, tenant_id: str, event: NewEvent, first_delay_s: float) -> Published:
        return await self._publications.submit(tenant_id, (event, first_delay_s))

    async def _publish_batch(
        self, tenant_id: str, items: Sequence[tuple[NewEvent, float]]
    ) -> list[Published]:
        # An id twice in one batch is stored and queued once; the repeat is a re-publication.
        first: dict[str, int] = {}
        for index, (event, _) in enumerate(items):
            first.setdefault(event.id, index)
        unique = [items[index] for index in sorted(first.values())]
        worker = self._worker
        reserved = worker.reserve(len(unique) * HAND_OVER_PER_EVENT) if worker else 0
        token = str(uuid.uuid4())
        jobs: list[Job] = []
        try:
            async with self._db.tenant_transaction(tenant_id) as conn:
                cur = await conn.execute(
                    _PUBLISH,
                    {
                        "tenant": tenant_id,
                        # Scalars as one JSON document (cheap to adapt), bodies as bytea.
                        "events": json.dumps(
                            [
                                {"n": n, "id": event.id, "type": event.type, "delay": delay}
                                for n, (event, delay) in enumerate(unique, start=1)
                            ]
                        ),
                        "payloads": [event.body for event, _ in unique],
                        "lease_limit": reserved,
                        "lease_s": worker.lease_s if worker else 0.0,
                        "token": token,
                    },
                )
                rows = await cur.fetchall()
            if len(rows) != len(unique):
                raise RuntimeError("PublishEvent's statement returned a row count it should not")
            results: dict[str, Published] = {}
            for (event, _), row in zip(unique, rows, strict=True):
                leased = [
                    _leased_job(tenant_id, token, event, job, self._box)
                    for job in row["jobs"] or ()
                ]
                jobs += leased
                results[event.id] = Published(
                    queued=int(row["queued"]),
                    tenant_found=bool(row["tenant_found"]),
                    dispatched=len(leased),
                )
        finally:
            if worker is not None:
                worker.hand_over(jobs, reserved)
        found = bool(rows[0]["tenant_found"])
        return [
            results[event.id] if first[event.id] == index else Published(0, tenant_found=found)
            for index, (event, _) in enumerate(items)
        ]

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
                # The event is locked like the foreign key will lock it: retention deleting
                # it at this moment is waited for, and then there is nothing to resend.
                cur = await conn.execute(
                    "SELECT d.event_id, e.type FROM webhook_deliveries d"
                    " JOIN webhook_events e ON e.id = d.event_id"
                    " WHERE d.id = %s AND d.webhook_id = %s FOR KEY SHARE OF e",
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
            if row is not None and delivery_id is not None:
                await audit.record(
                    conn,
                    tenant_id,
                    audit.AuditEvent(
                        "webhook.delivery_resend",
                        "webhook_delivery",
                        delivery_id,
                        details={"webhook_id": webhook_id, "new_delivery_id": str(row["id"])},
                    ),
                )
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
