"""The delivery queue in PostgreSQL, as the worker uses it.

Only two reads cross tenants: finding due deliveries and the gauges' counts, in
`lookup_transaction(delivery_worker='on')`, which the read-only webhook_deliveries_worker_read
policy matches (ids, tenants, times and states; no payload, URL or secret). Every write - the
claim itself, lease renewal and release, the result - and every read of a payload or an
endpoint happens in the delivery's own tenant transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from services.common.db import Database
from services.webhook.delivery_store import insert_event, queue_subscribed
from services.webhook.events import NewEvent
from services.webhook.policy import AttemptResult, AttemptStatus, Outcome
from services.webhook.worker import Claim, Job, QueueStats, Recorded

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
# and rows it has leased are no longer due, so no delivery is ever leased twice.
_CLAIM = f"""
UPDATE webhook_deliveries SET
  locked_until = now() + make_interval(secs => %s), lease_token = gen_random_uuid()
WHERE id IN (
  SELECT d.id FROM webhook_deliveries d WHERE d.tenant_id = %s AND {_DUE}
  ORDER BY d.next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id::text AS delivery_id, lease_token::text AS lease_token
"""  # noqa: S608 (constants only)


def _by_tenant(claims: Iterable[Claim]) -> dict[str, list[str]]:
    tokens: dict[str, list[str]] = defaultdict(list)
    for claim in claims:
        tokens[claim.tenant_id].append(claim.lease_token)
    return tokens


_LOAD = """
SELECT d.attempt, d.event_id, d.webhook_id::text AS webhook_id, d.ordered,
       w.url, w.enabled, w.secret, w.previous_secret,
       w.previous_secret IS NOT NULL AND w.previous_secret_expires_at > now() AS previous_live,
       w.failing_since, e.type, e.payload
FROM webhook_deliveries d
JOIN webhooks w ON w.id = d.webhook_id
JOIN webhook_events e ON e.id = d.event_id
WHERE d.id = %s AND d.lease_token = %s AND d.status = 'PENDING'
"""

_FINISH_DELIVERY = """
UPDATE webhook_deliveries SET
  attempt = %(number)s, status = %(status)s,
  next_attempt_at = now() + make_interval(secs => %(retry_in)s),
  locked_until = NULL, lease_token = NULL, updated_at = now()
WHERE id = %(id)s AND lease_token = %(token)s AND status = 'PENDING'
RETURNING next_attempt_at
"""

_FINISH_ATTEMPT = """
UPDATE webhook_attempts SET
  status = %(status)s, response_status = %(response_status)s, response_body = %(body)s,
  error = %(error)s, duration_ms = %(duration_ms)s, next_attempt_at = %(next)s,
  attempted_at = %(attempted_at)s
WHERE delivery_id = %(id)s AND number = %(number)s
"""


class PostgresDeliveryQueue:
    """DeliveryQueue on PostgreSQL (see the module docstring for the two kinds of transaction)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # ------------------------------------------------------------------ leases
    async def claim(self, limit: int, lease_s: float) -> list[Claim]:
        async with self._db.lookup_transaction(**WORKER_LOOKUP) as conn:
            cur = await conn.execute(_TENANTS_WITH_WORK, (limit * LOOKAHEAD,))
            tenants = [row["tenant_id"] for row in await cur.fetchall()]
        claims: list[Claim] = []
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

    async def _claim_in(self, tenant_id: str, wanted: int, lease_s: float) -> list[Claim]:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(_CLAIM, (lease_s, tenant_id, wanted))
            rows = await cur.fetchall()
        return [Claim(row["delivery_id"], tenant_id, row["lease_token"]) for row in rows]

    async def renew(self, claims: Sequence[Claim], lease_s: float) -> None:
        for tenant_id, tokens in _by_tenant(claims).items():
            async with self._db.tenant_transaction(tenant_id) as conn:
                await conn.execute(
                    "UPDATE webhook_deliveries SET locked_until = now()"
                    " + make_interval(secs => %s)"
                    " WHERE lease_token = ANY(%s::uuid[]) AND status = 'PENDING'",
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
    async def load(self, claim: Claim) -> Job | None:
        async with self._db.tenant_transaction(claim.tenant_id) as conn:
            cur = await conn.execute(_LOAD, (claim.delivery_id, claim.lease_token))
            row = await cur.fetchone()
        if row is None:
            return None
        secrets = (
            (row["secret"], row["previous_secret"]) if row["previous_live"] else (row["secret"],)
        )
        return Job(
            claim=claim,
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
        self,
        job: Job,
        result: AttemptResult,
        outcome: Outcome,
        attempted_at: datetime,
        disabled: NewEvent | None,
        first_delay_s: float,
    ) -> Recorded:
        claim = job.claim
        number = job.attempts_made + 1
        failed = outcome.status is AttemptStatus.FAILED
        async with self._db.tenant_transaction(claim.tenant_id) as conn:
            cur = await conn.execute(
                _FINISH_DELIVERY,
                {
                    "number": number,
                    # FAILED is a state of an attempt; the delivery itself waits for the next.
                    "status": AttemptStatus.PENDING.value if failed else outcome.status.value,
                    "retry_in": outcome.retry_in_s,
                    "id": claim.delivery_id,
                    "token": claim.lease_token,
                },
            )
            finished = await cur.fetchone()
            if finished is None:
                return Recorded(held=False)
            await conn.execute(
                _FINISH_ATTEMPT,
                {
                    "status": outcome.status.value,
                    "response_status": result.status_code,
                    "body": result.body,
                    "error": result.error,
                    "duration_ms": round(result.duration_s * 1000, 3),
                    "next": finished["next_attempt_at"],
                    "attempted_at": attempted_at,
                    "id": claim.delivery_id,
                    "number": number,
                },
            )
            if failed:
                await conn.execute(
                    "INSERT INTO webhook_attempts"
                    " (id, tenant_id, delivery_id, webhook_id, number)"
                    " VALUES (gen_random_uuid(), %s, %s, %s, %s)",
                    (claim.tenant_id, claim.delivery_id, job.webhook_id, number + 1),
                )
            # The endpoint's failure clock: started by the first failure, stopped by a success.
            if result.succeeded:
                await conn.execute(
                    "UPDATE webhooks SET failing_since = NULL"
                    " WHERE id = %s AND failing_since IS NOT NULL",
                    (job.webhook_id,),
                )
            else:
                await conn.execute(
                    "UPDATE webhooks SET failing_since = now()"
                    " WHERE id = %s AND failing_since IS NULL",
                    (job.webhook_id,),
                )
            if not outcome.disable_reason:
                return Recorded(held=True)
            cur = await conn.execute(
                "UPDATE webhooks SET enabled = false, disabled_reason = %s"
                " WHERE id = %s AND enabled RETURNING id",
                (outcome.disable_reason, job.webhook_id),
            )
            if await cur.fetchone() is None:
                return Recorded(held=True)
            await conn.execute(
                "UPDATE webhook_deliveries SET paused = true, updated_at = now()"
                " WHERE webhook_id = %s AND status = 'PENDING'",
                (job.webhook_id,),
            )
            if disabled is not None and await insert_event(conn, claim.tenant_id, disabled):
                await queue_subscribed(
                    conn, claim.tenant_id, disabled, first_delay_s, exclude_webhook=job.webhook_id
                )
        return Recorded(held=True, disabled=True)
