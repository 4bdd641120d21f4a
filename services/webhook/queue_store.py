"""The delivery queue in PostgreSQL, as the worker uses it.

Only two reads cross tenants: finding due deliveries and the gauges' counts, in
`lookup_transaction(delivery_worker='on')`, which the read-only webhook_deliveries_worker_read
policy matches (ids, tenants, times and states; no payload, URL or secret). Every write - the
claim itself, lease renewal and release, the result - and every read of a payload or an
endpoint happens in the delivery's own tenant transaction.

Each of those is one statement per batch, not per delivery: a claim leases a tenant's due
deliveries and returns them joined with their endpoints and events; a result batch, passed as
one JSON document, updates the deliveries and their log rows and adds the next log rows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from services.common import audit
from services.common.db import Connection, Database
from services.webhook.delivery_store import insert_event, queue_subscribed
from services.webhook.policy import AttemptStatus
from services.webhook.secret_box import SecretBox
from services.webhook.worker import Attempted, Claim, Job, QueueStats, Recorded

WORKER_LOOKUP = {"delivery_worker": "on"}
# How far down the due list the worker looks for tenants with work, per delivery wanted.
LOOKAHEAD = 4

# Due: waiting, not paused, not leased, and on an ordered endpoint the oldest pending one.
_DUE = """
d.status = 'PENDING' AND NOT d.paused AND d.next_attempt_at <= now()
AND (d.locked_until IS NULL OR d.locked_until <= now())
AND (NOT d.ordered OR NOT EXISTS (
  SELECT 1 FROM webhook_deliveries e
  WHERE e.webhook_id = d.webhook_id AND e.status = 'PENDING' AND e.seq < d.seq))
"""
# Tenants with due deliveries, the longest-waiting first (the one cross-tenant read).
_TENANTS_WITH_WORK = f"""
SELECT tenant_id::text AS tenant_id FROM (
  SELECT d.tenant_id, d.next_attempt_at FROM webhook_deliveries d
  WHERE {_DUE} ORDER BY d.next_attempt_at LIMIT %s
) due GROUP BY tenant_id ORDER BY min(next_attempt_at)
"""  # noqa: S608 (constants only)
# The claim proper, in the tenant's transaction: rows another worker is claiming are skipped
# and rows it has leased are no longer due, so no delivery is ever leased twice. It returns
# what each attempt needs (endpoint, secrets, event body), read in the same transaction.
_CLAIM = f"""
WITH claimed AS (
  UPDATE webhook_deliveries SET
    locked_until = now() + make_interval(secs => %s), lease_token = gen_random_uuid()
  WHERE id IN (
    SELECT d.id FROM webhook_deliveries d WHERE d.tenant_id = %s AND {_DUE}
    ORDER BY d.next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)
  RETURNING id, tenant_id, lease_token, attempt, event_id, webhook_id, ordered, next_attempt_at
)
SELECT c.id::text AS delivery_id, c.lease_token::text AS lease_token, c.attempt, c.event_id,
       c.webhook_id::text AS webhook_id, c.ordered,
       w.url, w.enabled, w.secret, w.secret_sealed, w.previous_secret, w.previous_secret_sealed,
       w.previous_secret_expires_at > now() AS previous_live,
       w.failing_since, e.type, e.payload
FROM claimed c
JOIN webhooks w ON w.id = c.webhook_id
JOIN webhook_events e ON e.tenant_id = c.tenant_id AND e.id = c.event_id
ORDER BY c.next_attempt_at
"""  # noqa: S608 (constants only)


def _by_tenant(claims: Iterable[Claim]) -> dict[str, list[str]]:
    tokens: dict[str, list[str]] = defaultdict(list)
    for claim in claims:
        tokens[claim.tenant_id].append(claim.lease_token)
    return tokens


# A batch of results, one array element per attempt, in the order the attempts ended. A
# delivery is written only while its lease is held (the token); its attempt's log row is filled
# in, and a FAILED attempt adds the next, PENDING, row. Each endpoint's failure clock is set as
# if the written attempts had been recorded one by one: a success stops it, a failure starts it
# unless it runs, a failure after a success in the batch starts it afresh. Returns the
# deliveries written.
_FINISH = """
WITH v AS (
  SELECT * FROM json_to_recordset(%(attempts)s::json) AS v(
    n int, id uuid, token uuid, number int, state text, retry_in float8, status text,
    response_status int, body text, error text, duration_ms float8, attempted_at timestamptz,
    succeeded bool)
), finished AS (
  UPDATE webhook_deliveries d SET
    attempt = v.number, status = v.state,
    next_attempt_at = now() + make_interval(secs => v.retry_in),
    locked_until = NULL, lease_token = NULL, updated_at = now()
  FROM v
  WHERE d.id = v.id AND d.lease_token = v.token AND d.status = 'PENDING'
  RETURNING d.id, d.webhook_id, d.next_attempt_at
), logged AS (
  UPDATE webhook_attempts a SET
    status = v.status, response_status = v.response_status, response_body = v.body,
    error = v.error, duration_ms = v.duration_ms, next_attempt_at = f.next_attempt_at,
    attempted_at = v.attempted_at
  FROM finished f JOIN v ON v.id = f.id
  WHERE a.delivery_id = f.id AND a.number = v.number
), next AS (
  INSERT INTO webhook_attempts (id, tenant_id, delivery_id, webhook_id, number)
  SELECT gen_random_uuid(), %(tenant)s, f.id, f.webhook_id, v.number + 1
  FROM finished f JOIN v ON v.id = f.id
  WHERE v.status = 'FAILED'
), clock AS (
  SELECT DISTINCT ON (f.webhook_id) f.webhook_id, v.succeeded AS last_succeeded,
         bool_or(v.succeeded) OVER (PARTITION BY f.webhook_id) AS any_succeeded
  FROM finished f JOIN v ON v.id = f.id
  ORDER BY f.webhook_id, v.n DESC
), clocked AS (
  UPDATE webhooks w SET failing_since = CASE WHEN c.last_succeeded THEN NULL ELSE now() END
  FROM clock c
  WHERE w.id = c.webhook_id AND CASE
    WHEN c.last_succeeded THEN w.failing_since IS NOT NULL
    WHEN c.any_succeeded THEN true
    ELSE w.failing_since IS NULL
  END
)
SELECT id::text AS id FROM finished
"""


def _finish_params(tenant_id: str, attempts: Sequence[Attempted]) -> dict[str, object]:
    # One JSON document rather than an array per column: json.dumps is far cheaper than
    # adapting a dozen arrays element by element, and PostgreSQL unpacks it in one call.
    rows = []
    for n, item in enumerate(attempts):
        claim, status, result = item.job.claim, item.outcome.status, item.result
        # FAILED is a state of an attempt; the delivery itself waits for the next.
        state = AttemptStatus.PENDING if status is AttemptStatus.FAILED else status
        rows.append(
            {
                "n": n,
                "id": claim.delivery_id,
                "token": claim.lease_token,
                "number": item.job.attempts_made + 1,
                "state": state.value,
                "retry_in": item.outcome.retry_in_s,
                "status": status.value,
                "response_status": result.status_code,
                "body": result.body,
                "error": result.error,
                "duration_ms": round(result.duration_s * 1000, 3),
                "attempted_at": item.attempted_at.isoformat(),
                "succeeded": result.succeeded,
            }
        )
    return {"tenant": tenant_id, "attempts": json.dumps(rows)}


class PostgresDeliveryQueue:
    """DeliveryQueue on PostgreSQL (see the module docstring for the two kinds of transaction)."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        # Opens the endpoints' sealed secrets for the attempts (ADR 56).
        self._box = box

    # ------------------------------------------------------------------ leases
    async def claim(self, limit: int, lease_s: float) -> list[Job]:
        async with self._db.lookup_transaction(**WORKER_LOOKUP) as conn:
            cur = await conn.execute(_TENANTS_WITH_WORK, (limit * LOOKAHEAD,))
            tenants = [row["tenant_id"] for row in await cur.fetchall()]
        claims: list[Job] = []
        if not tenants:
            return claims
        # A fair share each first, so one tenant's backlog cannot hold the others up; then
        # whatever is left to those that had more.
        share = -(-limit // len(tenants))
        more = list(tenants)
        for allowance in (share, limit):
            for tenant_id in list(more):
                wanted = min(allowance, limit - len(claims))
                if wanted <= 0:
                    return claims
                got = await self._claim_in(tenant_id, wanted, lease_s)
                claims += got
                if len(got) < wanted:
                    more.remove(tenant_id)
        return claims

    async def _claim_in(self, tenant_id: str, wanted: int, lease_s: float) -> list[Job]:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(_CLAIM, (lease_s, tenant_id, wanted))
            rows = await cur.fetchall()
        return [_job(tenant_id, row, self._box) for row in rows]

    async def renew(self, claims: Sequence[Claim], lease_s: float) -> None:
        for tenant_id, tokens in _by_tenant(claims).items():
            async with self._db.tenant_transaction(tenant_id) as conn:
                # Rows locked by a result being written are skipped (their lease is about to
                # end): waiting for them could deadlock with that write, which locks the same
                # rows in another order.
                await conn.execute(
                    "UPDATE webhook_deliveries SET locked_until = now()"
                    " + make_interval(secs => %s)"
                    " WHERE id IN (SELECT id FROM webhook_deliveries"
                    " WHERE lease_token = ANY(%s::uuid[]) AND status = 'PENDING'"
                    " FOR UPDATE SKIP LOCKED)",
                    (lease_s, tokens),
                )

    async def release(self, claims: Sequence[Claim]) -> None:
        for tenant_id, tokens in _by_tenant(claims).items():
            async with self._db.tenant_transaction(tenant_id) as conn:
                await conn.execute(
                    "UPDATE webhook_deliveries SET locked_until = NULL, lease_token = NULL,"
                    " updated_at = now()"
                    " WHERE lease_token = ANY(%s::uuid[]) AND status = 'PENDING'",
                    (tokens,),
                )

    async def stats(self) -> QueueStats:
        async with self._db.lookup_transaction(**WORKER_LOOKUP) as conn:
            cur = await conn.execute(
                "SELECT count(*) AS depth,"
                " coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest"
                " FROM webhook_deliveries WHERE status = 'PENDING' AND NOT paused"
            )
            row = await cur.fetchone()
        if row is None:
            return QueueStats(0, 0.0)
        return QueueStats(depth=int(row["depth"]), oldest_age_s=max(0.0, float(row["oldest"])))

    # ------------------------------------------------------------------ one delivery, its tenant
    async def pause(self, claim: Claim) -> None:
        async with self._db.tenant_transaction(claim.tenant_id) as conn:
            # The endpoint's row is locked first: enabling it waits for this transaction and
            # then resumes what it paused, or has already committed and this pauses nothing.
            await conn.execute(
                "SELECT w.enabled FROM webhooks w JOIN webhook_deliveries d"
                " ON d.webhook_id = w.id WHERE d.id = %s FOR SHARE OF w",
                (claim.delivery_id,),
            )
            await conn.execute(
                "UPDATE webhook_deliveries d SET paused = NOT w.enabled, locked_until = NULL,"
                " lease_token = NULL, updated_at = now() FROM webhooks w"
                " WHERE w.id = d.webhook_id AND d.id = %s AND d.lease_token = %s",
                (claim.delivery_id, claim.lease_token),
            )

    async def defer(self, claim: Claim, delay_s: float) -> None:
        async with self._db.tenant_transaction(claim.tenant_id) as conn:
            await conn.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = now()"
                " + make_interval(secs => %s), locked_until = NULL, lease_token = NULL,"
                " updated_at = now() WHERE id = %s AND lease_token = %s",
                (delay_s, claim.delivery_id, claim.lease_token),
            )

    async def record(
        self, tenant_id: str, attempts: Sequence[Attempted], first_delay_s: float
    ) -> list[Recorded]:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(_FINISH, _finish_params(tenant_id, attempts))
            written = {row["id"] for row in await cur.fetchall()}
            held = [item for item in attempts if item.job.claim.delivery_id in written]
            disabled: set[str] = set()
            for item in held:
                if item.outcome.disable_reason and await self._disable(
                    conn, tenant_id, item, first_delay_s
                ):
                    disabled.add(item.job.claim.delivery_id)
        return [
            Recorded(
                held=item.job.claim.delivery_id in written,
                disabled=item.job.claim.delivery_id in disabled,
            )
            for item in attempts
        ]

    @staticmethod
    async def _disable(
        conn: Connection, tenant_id: str, item: Attempted, first_delay_s: float
    ) -> bool:
        """Disables the attempt's endpoint, pauses its deliveries and queues the notice to the
        tenant's other endpoints; False when the endpoint was disabled already."""
        webhook_id = item.job.webhook_id
        cur = await conn.execute(
            "UPDATE webhooks SET enabled = false, disabled_reason = %s"
            " WHERE id = %s AND enabled RETURNING id",
            (item.outcome.disable_reason, webhook_id),
        )
        if await cur.fetchone() is None:
            return False
        await audit.record(
            conn,
            tenant_id,
            audit.AuditEvent(
                "webhook.auto_disable",
                "webhook",
                webhook_id,
                details={"why": item.outcome.disable_reason[:200]},
            ),
            actor=audit.Actor.system("webhook-worker"),
        )
        await conn.execute(
            "UPDATE webhook_deliveries SET paused = true, updated_at = now()"
            " WHERE webhook_id = %s AND status = 'PENDING'",
            (webhook_id,),
        )
        if item.disabled is not None and await insert_event(conn, tenant_id, item.disabled):
            await queue_subscribed(
                conn, tenant_id, item.disabled, first_delay_s, exclude_webhook=webhook_id
            )
        return True


def _job(tenant_id: str, row: dict[str, Any], box: SecretBox) -> Job:
    live = bool(row["previous_live"])
    secrets = box.live_secrets(
        tenant_id,
        row["webhook_id"],
        current=row["secret"],
        current_sealed=row["secret_sealed"],
        previous=row["previous_secret"] if live else None,
        previous_sealed=row["previous_secret_sealed"] if live else None,
    )
    return Job(
        claim=Claim(row["delivery_id"], tenant_id, row["lease_token"]),
        webhook_id=row["webhook_id"],
        url=row["url"],
        enabled=row["enabled"],
        ordered=row["ordered"],
        secrets=secrets,
        failing_since=row["failing_since"],
        event_id=row["event_id"],
        event_type=row["type"],
        body=bytes(row["payload"]),
        attempts_made=row["attempt"],
    )
