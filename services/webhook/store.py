"""PostgreSQL persistence for webhook endpoints, under row-level security."""

from __future__ import annotations

from typing import Any

from services.common.db import Database
from services.common.paging import Cursor, newest_first_query
from services.webhook.endpoints import NewWebhook, WebhookRecord

_COLUMNS = "id::text, url, event_types, description, enabled, disabled_reason, created_at"


def _webhook(row: dict[str, Any]) -> WebhookRecord:
    return WebhookRecord(
        id=row["id"],
        url=row["url"],
        event_types=tuple(row["event_types"]),
        description=row["description"],
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
    )


class PostgresWebhookStore:
    """WebhookStore on PostgreSQL; every statement runs in the tenant's transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, tenant_id: str, webhook: NewWebhook) -> WebhookRecord:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(
                "INSERT INTO webhooks (id, tenant_id, url, event_types, description, secret)"  # noqa: S608
                f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (
                    webhook.id,
                    tenant_id,
                    webhook.url,
                    list(webhook.event_types),
                    webhook.description,
                    webhook.secret,
                ),
            )
            row = await cur.fetchone()
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
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
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute("DELETE FROM webhooks WHERE id = %s", (webhook_id,))
            return cur.rowcount > 0
