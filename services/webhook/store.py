"""PostgreSQL persistence for webhook endpoints, under row-level security."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from services.common import audit
from services.common.db import Database, retry_conflicts
from services.common.paging import Cursor, newest_first_query
from services.common.subscriptions import SubscriptionNotices
from services.webhook.endpoints import NewWebhook, WebhookRecord
from services.webhook.secret_box import SecretBox

_COLUMNS = "id::text, url, event_types, description, enabled, disabled_reason, created_at, ordered"


def _webhook(row: dict[str, Any]) -> WebhookRecord:
    return WebhookRecord(
        id=row["id"],
        url=row["url"],
        event_types=tuple(row["event_types"]),
        description=row["description"],
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
        ordered=row["ordered"],
    )


def url_host(url: str) -> str:
    """An endpoint URL as the audit trail keeps it: its host only. Path, query and user info
    often carry a credential (a Slack or Teams hook URL is one), and no event may hold one."""
    return urlsplit(url).hostname or ""


class PostgresWebhookStore:
    """WebhookStore on PostgreSQL; every statement runs in the tenant's transaction.

    Secrets are written sealed only (`box`), never in plaintext (ADR 56).
    """

    def __init__(
        self, db: Database, box: SecretBox, *, notices: SubscriptionNotices | None = None
    ) -> None:
        """`notices`: how a change that may add a subscription tells the event writers before
        it commits (services.common.subscriptions); every service passes one."""
        self._db = db
        self._box = box
        self._notices = notices

    async def _widen(self, tenant_id: str) -> None:
        if self._notices is not None:
            await self._notices.widen(tenant_id)

    async def subscribed_types(self, tenant_id: str) -> list[str]:
        """The event types the tenant's enabled endpoints subscribe to."""
        rows = await self._db.tenant_statement(
            tenant_id,
            "SELECT DISTINCT unnest(event_types) AS event_type FROM webhooks WHERE enabled",
            (),
        )
        return [str(row["event_type"]) for row in rows]

    async def insert(self, tenant_id: str, webhook: NewWebhook) -> WebhookRecord:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(
                "INSERT INTO webhooks"  # noqa: S608
                " (id, tenant_id, url, event_types, description, secret_sealed, ordered)"
                f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (
                    webhook.id,
                    tenant_id,
                    webhook.url,
                    list(webhook.event_types),
                    webhook.description,
                    self._box.seal(tenant_id, webhook.id, webhook.secret),
                    webhook.ordered,
                ),
            )
            row = await cur.fetchone()
            if row is None:
                raise RuntimeError("INSERT ... RETURNING returned no row")
            await self._widen(tenant_id)
            await audit.record(
                conn,
                tenant_id,
                audit.AuditEvent(
                    "webhook.create",
                    "webhook",
                    webhook.id,
                    details={
                        "host": url_host(webhook.url),
                        "event_types": ",".join(webhook.event_types),
                        "ordered": webhook.ordered,
                    },
                ),
            )
        return _webhook(row)

    async def get(self, tenant_id: str, webhook_id: str) -> WebhookRecord | None:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM webhooks WHERE id = %s",  # noqa: S608
                (webhook_id,),
            )
            row = await cur.fetchone()
        return _webhook(row) if row else None

    async def list_webhooks(
        self, tenant_id: str, *, limit: int, after: Cursor | None
    ) -> list[WebhookRecord]:
        query, params = newest_first_query(
            _COLUMNS, "webhooks", tenant_id, limit=limit, after=after
        )
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        return [_webhook(row) for row in rows]

    async def delete(self, tenant_id: str, webhook_id: str) -> bool:
        # The cascade to the endpoint's deliveries can deadlock with the delivery worker's row
        # locks under load; PostgreSQL aborts one side, and this side runs again.
        async def attempt() -> bool:
            async with self._db.tenant_transaction(tenant_id) as conn:
                cur = await conn.execute(
                    "DELETE FROM webhooks WHERE id = %s RETURNING url", (webhook_id,)
                )
                deleted = await cur.fetchone()
                if deleted is None:
                    return False
                await audit.record(
                    conn,
                    tenant_id,
                    audit.AuditEvent(
                        "webhook.delete",
                        "webhook",
                        webhook_id,
                        details={"host": url_host(deleted["url"])},
                    ),
                )
                return True

        return await retry_conflicts(attempt)

    async def rotate_secret(
        self, tenant_id: str, webhook_id: str, secret: str, overlap_s: float
    ) -> datetime | None:
        sealed = self._box.seal(tenant_id, webhook_id, secret)
        async with self._db.tenant_transaction(tenant_id) as conn:
            # The current secret becomes the previous one in whichever form the row holds it
            # (plaintext only in rows not yet sealed by `encrypt-secrets`).
            cur = await conn.execute(
                "UPDATE webhooks SET previous_secret = secret,"
                " previous_secret_sealed = secret_sealed,"
                " previous_secret_expires_at = now() + make_interval(secs => %s),"
                " secret = NULL, secret_sealed = %s"
                " WHERE id = %s RETURNING previous_secret_expires_at",
                (overlap_s, sealed, webhook_id),
            )
            row = await cur.fetchone()
            if row is not None:
                await audit.record(
                    conn,
                    tenant_id,
                    audit.AuditEvent(
                        "webhook.secret_rotate",
                        "webhook",
                        webhook_id,
                        details={"previous_valid_s": round(overlap_s)},
                    ),
                )
        return row["previous_secret_expires_at"] if row else None

    async def enable(self, tenant_id: str, webhook_id: str) -> WebhookRecord | None:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(
                # A disabled endpoint starts a fresh failure clock; an enabled one keeps its own.
                "UPDATE webhooks SET enabled = true, disabled_reason = '',"  # noqa: S608
                " failing_since = CASE WHEN enabled THEN failing_since END"
                f" WHERE id = %s RETURNING {_COLUMNS}",
                (webhook_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            await self._widen(tenant_id)
            await audit.record(
                conn, tenant_id, audit.AuditEvent("webhook.enable", "webhook", webhook_id)
            )
            await conn.execute(
                "UPDATE webhook_deliveries SET paused = false, updated_at = now()"
                " WHERE webhook_id = %s AND status = 'PENDING' AND paused",
                (webhook_id,),
            )
        return _webhook(row)
