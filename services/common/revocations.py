"""Revocations kept in PostgreSQL, the durable copy the Redis denylist is rebuilt from.

Revoked access tokens live in `revoked_access_tokens` (migration 0011) until they expire;
revoked API keys are `api_keys.revoked_at` (migration 0004). Logout records a token in the
caller's tenant; the rebuild reads every tenant's through the read-only
`revoked_access_tokens_rebuild_read` and `api_keys_revoked_rebuild_read` policies, and the
purge finds expired rows the same way and deletes them inside each tenant's own transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.common.access_tokens import DEFAULT_LEEWAY_S
from services.common.db import Database
from services.common.errors import DomainError

logger = logging.getLogger("catalytic.revocations")

# Each logout deletes up to this many long-expired rows, so the purge keeps pace with the
# inserts (one per logout) and no logout pays for a large backlog.
PURGE_BATCH = 100
# A row is deleted this long after its token's `exp`: far past any verifier's leeway.
PURGE_AFTER_S = 60

_INSERT = (
    "INSERT INTO revoked_access_tokens (jti, tenant_id, expires_at)"
    " VALUES (%s, %s, to_timestamp(%s)) ON CONFLICT (jti) DO NOTHING"
)
_EXPIRED = (
    "SELECT tenant_id::text, array_agg(jti) AS jtis FROM ("
    " SELECT tenant_id, jti FROM revoked_access_tokens"
    " WHERE expires_at < now() - make_interval(secs => %s) ORDER BY expires_at LIMIT %s"
    ") AS expired GROUP BY tenant_id"
)
_DELETE = (
    "WITH gone AS (DELETE FROM revoked_access_tokens"
    " WHERE jti = ANY(%s) AND expires_at < now() - make_interval(secs => %s) RETURNING 1)"
    " SELECT count(*) AS n FROM gone"
)
_UNEXPIRED_TOKENS = (
    "SELECT jti, extract(epoch FROM expires_at)::float8 AS expires_at"
    " FROM revoked_access_tokens WHERE expires_at > now() - make_interval(secs => %s)"
)
_RECENT_API_KEYS = (
    "SELECT id::text, extract(epoch FROM revoked_at)::float8 AS revoked_at"
    " FROM api_keys WHERE revoked_at > now() - make_interval(secs => %s)"
)


@dataclass(frozen=True, slots=True)
class RevokedToken:
    """An access token revoked before its `exp` (seconds since the epoch)."""

    jti: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class RevokedApiKey:
    """An API key deleted at `revoked_at` (seconds since the epoch)."""

    key_id: str
    revoked_at: float


@dataclass(frozen=True, slots=True)
class Revocations:
    """Everything the denylist must hold: unexpired tokens and recently deleted keys."""

    tokens: list[RevokedToken]
    api_keys: list[RevokedApiKey]


class PostgresRevocations:
    """The `revoked_access_tokens` table and the revoked rows of `api_keys`."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def record(self, tenant_id: str, jti: str, expires_at: float) -> None:
        """Stores the revocation of the token `jti` (expiring at `expires_at`, epoch seconds),
        committed when this returns; Unavailable (and nothing stored) when PostgreSQL is down.

        Then deletes a batch of long-expired revocations of any tenant, best effort.
        """
        await self._db.tenant_statement(tenant_id, _INSERT, (jti, tenant_id, expires_at))
        try:
            await self.purge_expired()
        except DomainError as exc:
            logger.info("revocation purge skipped (%s); the next logout purges", exc.message)

    async def purge_expired(self, batch: int = PURGE_BATCH) -> int:
        """Deletes up to `batch` revocations whose tokens expired over PURGE_AFTER_S ago, the
        oldest first; how many it deleted."""
        async with self._db.lookup_transaction(denylist_rebuild="on") as conn:
            cur = await conn.execute(_EXPIRED, (PURGE_AFTER_S, batch))
            expired = await cur.fetchall()
        deleted = 0
        for row in expired:
            rows = await self._db.tenant_statement(
                row["tenant_id"], _DELETE, (row["jtis"], PURGE_AFTER_S)
            )
            deleted += int(rows[0]["n"])
        return deleted

    async def unexpired(self, api_key_window_s: float) -> Revocations:
        """Every tenant's tokens that a verifier may still accept (within its leeway), and
        the API keys deleted in the last `api_key_window_s` seconds."""
        async with self._db.lookup_transaction(
            denylist_rebuild="on", api_key_revocations="on"
        ) as conn:
            cur = await conn.execute(_UNEXPIRED_TOKENS, (DEFAULT_LEEWAY_S,))
            tokens = [RevokedToken(row["jti"], row["expires_at"]) for row in await cur.fetchall()]
            cur = await conn.execute(_RECENT_API_KEYS, (api_key_window_s,))
            keys = [RevokedApiKey(row["id"], row["revoked_at"]) for row in await cur.fetchall()]
        return Revocations(tokens, keys)
