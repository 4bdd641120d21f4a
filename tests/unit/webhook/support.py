"""Test doubles for the webhook service: an in-memory store, fixed DNS, principals, tokens."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.auth.keys import KeyRing
from services.auth.tokens import TokenIssuer
from services.common.access_tokens import AccessTokenVerifier
from services.common.context import Principal
from services.common.paging import Cursor
from services.webhook.endpoints import NewWebhook, WebhookRecord
from services.webhook.ssrf import HostNotResolved

TENANT = str(uuid.uuid4())
OTHER_TENANT = str(uuid.uuid4())
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ISSUER = "catalytic-auth"
AUDIENCE = "catalytic-api"


def principal(tenant_id: str = TENANT) -> Principal:
    return Principal(
        user_id=str(uuid.uuid4()), tenant_id=tenant_id, role="owner", auth_method="jwt"
    )


class FixedResolver:
    """Answers from a table, recording the questions; an unknown name does not resolve."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise HostNotResolved("host does not resolve")
        return self.answers[host]


PUBLIC_RESOLVER = FixedResolver({"hooks.example.com": ["93.184.215.14"]})


@dataclass
class FakeStore:
    rows: dict[str, tuple[str, WebhookRecord, str]] = field(default_factory=dict)

    async def insert(self, tenant_id: str, webhook: NewWebhook) -> WebhookRecord:
        record = WebhookRecord(
            id=webhook.id,
            url=webhook.url,
            event_types=webhook.event_types,
            description=webhook.description,
            enabled=True,
            disabled_reason="",
            created_at=T0 + timedelta(seconds=len(self.rows)),
        )
        self.rows[webhook.id] = (tenant_id, record, webhook.secret)
        return record

    async def get(self, tenant_id: str, webhook_id: str) -> WebhookRecord | None:
        owner, record, _ = self.rows.get(webhook_id, (None, None, None))
        return record if owner == tenant_id else None

    async def list_webhooks(
        self, tenant_id: str, *, limit: int, after: Cursor | None
    ) -> list[WebhookRecord]:
        mine = sorted(
            (record for owner, record, _ in self.rows.values() if owner == tenant_id),
            key=lambda r: (r.created_at, r.id),
            reverse=True,
        )
        if after is not None:
            mine = [r for r in mine if (r.created_at, r.id) < (after.created_at, after.id)]
        return mine[:limit]

    async def delete(self, tenant_id: str, webhook_id: str) -> bool:
        if await self.get(tenant_id, webhook_id) is None:
            return False
        del self.rows[webhook_id]
        return True


class Tokens:
    """Access tokens signed like the auth service's, and a verifier that trusts them."""

    def __init__(self, keys_dir: Path) -> None:
        self._keys = KeyRing.load(keys_dir)
        self._issuer = TokenIssuer(self._keys, issuer=ISSUER, audience=AUDIENCE, ttl_s=600)

    def metadata(self, tenant_id: str = TENANT) -> tuple[tuple[str, str], ...]:
        token = self._issuer.issue(user_id=str(uuid.uuid4()), tenant_id=tenant_id, role="owner")
        return (("authorization", f"Bearer {token.token}"),)

    def verifier(self) -> AccessTokenVerifier:
        async def fetch() -> Sequence[dict[str, str]]:
            return self._keys.jwks()

        return AccessTokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE)
