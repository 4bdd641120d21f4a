"""PostgreSQL persistence for the auth domain, under row-level security."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import psycopg

from services.auth.accounts import RefreshTokenRecord, TenantRecord, UserRecord
from services.auth.api_keys import ApiKeyRecord, NewApiKeyRow
from services.auth.membership import MemberRecord
from services.common import audit
from services.common.db import Connection, Database
from services.common.errors import AlreadyExists

_USER_COLUMNS = "id::text, email, tenant_id::text, role, created_at, password_hash"
_REFRESH_COLUMNS = (
    "tenant_id::text, user_id::text, family_id::text, expires_at,"
    " spent_at IS NOT NULL AS spent, revoked_at IS NOT NULL AS revoked"
)
_API_KEY_COLUMNS = "id::text, name, prefix, role, created_at, last_used_at"
MEMBER_COLUMNS = "tenant_id::text, user_id::text, email, role, created_at AS joined_at"
_INSERT_MEMBERSHIP = (
    "INSERT INTO memberships (tenant_id, user_id, email, role, created_at, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, user_id) DO NOTHING"
)
_INSERT_USER = (
    "INSERT INTO users (id, tenant_id, email, password_hash, role, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)


async def lock_looked_up(
    conn: Connection, table: str, columns: str, token_hash: str
) -> dict[str, Any] | None:
    """The row of `table` whose token_hash is `token_hash`, locked FOR UPDATE, inside a
    `lookup_transaction` opened with that hash: its look-up policy shows the row's tenant
    (read-only), which is then set for the transaction so that the isolation policy lets it
    lock and change the row. None when no row has that hash. `table` and `columns` are this
    module's literals, never input."""
    cur = await conn.execute(
        f"SELECT tenant_id::text FROM {table} WHERE token_hash = %s",  # noqa: S608
        (token_hash,),
    )
    found = await cur.fetchone()
    if found is None:
        return None
    await conn.execute("SELECT set_config('app.tenant_id', %s, true)", (found["tenant_id"],))
    cur = await conn.execute(
        f"SELECT {columns} FROM {table} WHERE token_hash = %s FOR UPDATE",  # noqa: S608
        (token_hash,),
    )
    row: dict[str, Any] | None = await cur.fetchone()
    return row


def _user(row: dict[str, Any]) -> UserRecord:
    return UserRecord(
        id=row["id"],
        email=row["email"],
        tenant_id=row["tenant_id"],
        role=row["role"],
        created_at=row["created_at"],
        password_hash=row["password_hash"],
    )


def _api_key(row: dict[str, Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        role=row["role"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )


class _RefreshSession:
    """RefreshSession over the open transaction that holds the token's row lock."""

    def __init__(self, conn: Connection, token_hash: str, token: RefreshTokenRecord | None) -> None:
        self._conn = conn
        self._hash = token_hash
        self._token = token

    @property
    def token(self) -> RefreshTokenRecord | None:
        return self._token

    def _locked(self) -> RefreshTokenRecord:
        if self._token is None:
            raise RuntimeError("no refresh token in this session")
        return self._token

    async def owner(self) -> UserRecord | None:
        # The member, in the token's tenant (the transaction's context): its role there.
        cur = await self._conn.execute(
            f"SELECT {MEMBER_COLUMNS} FROM memberships WHERE user_id = %s",  # noqa: S608
            (self._locked().user_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        # And the account itself, wherever it was created (the log-in policy, by e-mail).
        await self._conn.execute("SELECT set_config('app.lookup_email', %s, true)", (row["email"],))
        cur = await self._conn.execute(
            "SELECT 1 FROM users WHERE email = %s AND id = %s", (row["email"], row["user_id"])
        )
        if await cur.fetchone() is None:
            return None
        return UserRecord(
            id=row["user_id"],
            email=row["email"],
            tenant_id=row["tenant_id"],
            role=row["role"],
            created_at=row["joined_at"],
        )

    async def replace(self, successor_hash: str) -> None:
        token = self._locked()
        await self._conn.execute(
            "UPDATE refresh_tokens SET spent_at = now() WHERE token_hash = %s", (self._hash,)
        )
        await self._conn.execute(
            "INSERT INTO refresh_tokens (id, tenant_id, user_id, family_id, token_hash,"
            " expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                str(uuid.uuid4()),
                token.tenant_id,
                token.user_id,
                token.family_id,
                successor_hash,
                token.expires_at,
            ),
        )

    async def revoke_family(self) -> None:
        token = self._locked()
        await self._conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now()"
            " WHERE family_id = %s AND revoked_at IS NULL",
            (token.family_id,),
        )
        # Whoever presented it is unknown: the thief or the user.
        await audit.record(
            self._conn,
            token.tenant_id,
            audit.AuditEvent(
                "auth.refresh_reuse",
                "refresh_family",
                token.family_id,
                audit.FAILURE,
                "token_reused",
                {"user_id": token.user_id, "family_revoked": True},
            ),
            actor=audit.Actor("anonymous", ""),
        )


class PostgresAuthStore:
    """AuthStore and ApiKeyStore on PostgreSQL; every statement runs in a tenant or lookup
    context."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_tenant_with_owner(self, tenant: TenantRecord, user: UserRecord) -> None:
        try:
            async with self._db.tenant_transaction(tenant.id) as conn:
                await conn.execute(
                    "INSERT INTO tenants (id, name, plan) VALUES (%s, %s, %s)",
                    (tenant.id, tenant.name, tenant.plan),
                )
                await insert_member(conn, user)
                await audit.record(
                    conn,
                    tenant.id,
                    audit.AuditEvent(
                        "user.create",
                        "user",
                        user.id,
                        details={"role": user.role, "via": "register", "plan": tenant.plan},
                    ),
                    actor=audit.Actor("user", user.id),
                )
        except psycopg.errors.UniqueViolation as exc:
            raise AlreadyExists("an account with this e-mail already exists") from exc

    async def find_user_by_email(self, email: str) -> UserRecord | None:
        # The users_login_lookup policy admits exactly the row with this e-mail.
        async with self._db.lookup_transaction(email=email) as conn:
            cur = await conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE email = %s",  # noqa: S608
                (email,),
            )
            row = await cur.fetchone()
        return _user(row) if row else None

    async def memberships_of(self, email: str) -> list[MemberRecord]:
        # The memberships_login_lookup policy admits exactly this e-mail's memberships.
        async with self._db.lookup_transaction(member_email=email) as conn:
            cur = await conn.execute(
                f"SELECT {MEMBER_COLUMNS} FROM memberships WHERE email = %s",  # noqa: S608
                (email,),
            )
            rows = await cur.fetchall()
        return [MemberRecord(**row) for row in rows]

    async def tenants_of(self, email: str) -> list[tuple[TenantRecord, MemberRecord]]:
        """Every tenant the user with this e-mail belongs to, with the membership."""
        found: list[tuple[TenantRecord, MemberRecord]] = []
        async with self._db.lookup_transaction(member_email=email) as conn:
            cur = await conn.execute(
                f"SELECT {MEMBER_COLUMNS} FROM memberships WHERE email = %s"  # noqa: S608
                " ORDER BY created_at, tenant_id",
                (email,),
            )
            members = [MemberRecord(**row) for row in await cur.fetchall()]
            for member in members:
                # Each tenant's row in its own context: the user is a member of each.
                await conn.execute(
                    "SELECT set_config('app.tenant_id', %s, true)", (member.tenant_id,)
                )
                cur = await conn.execute(
                    "SELECT id::text, name, plan FROM tenants WHERE id = %s", (member.tenant_id,)
                )
                row = await cur.fetchone()
                if row is not None:
                    found.append((TenantRecord(**row), member))
        return found

    async def get_user(self, tenant_id: str, user_id: str) -> UserRecord | None:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(
                "SELECT email, role FROM memberships WHERE user_id = %s", (user_id,)
            )
            member = await cur.fetchone()
            if member is None:
                return None
            # The users row may belong to another tenant (where the account was created): read
            # it through the log-in policy, by the member's e-mail.
            await conn.execute(
                "SELECT set_config('app.lookup_email', %s, true)", (member["email"],)
            )
            cur = await conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE email = %s AND id = %s",  # noqa: S608
                (member["email"], user_id),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return dataclasses.replace(_user(row), tenant_id=tenant_id, role=member["role"])

    async def update_password_hash(self, tenant_id: str, user_id: str, password_hash: str) -> None:
        async with self._db.tenant_transaction(tenant_id) as conn:
            await conn.execute(
                "UPDATE users SET password_hash = %s, updated_at = now() WHERE id = %s",
                (password_hash, user_id),
            )

    async def save_refresh_token(
        self,
        *,
        tenant_id: str,
        user_id: str,
        family_id: str,
        token_hash: str,
        expires_at: datetime,
    ) -> None:
        async with self._db.tenant_transaction(tenant_id) as conn:
            await conn.execute(
                "INSERT INTO refresh_tokens (id, tenant_id, user_id, family_id, token_hash,"
                " expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (str(uuid.uuid4()), tenant_id, user_id, family_id, token_hash, expires_at),
            )

    @asynccontextmanager
    async def refresh_session(self, token_hash: str) -> AsyncIterator[_RefreshSession]:
        # The refresh_tokens_lookup policy admits exactly the row with this hash, read-only;
        # with its tenant set, the isolation policy lets the same transaction lock and update.
        async with self._db.lookup_transaction(refresh_token_hash=token_hash) as conn:
            # A concurrent use of the same token waits for the lock, then sees it spent.
            row = await lock_looked_up(conn, "refresh_tokens", _REFRESH_COLUMNS, token_hash)
            token = RefreshTokenRecord(**row) if row is not None else None
            yield _RefreshSession(conn, token_hash, token)

    async def revoke_refresh_family(self, tenant_id: str, user_id: str, token_hash: str) -> bool:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(
                "UPDATE refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL"
                " AND family_id = (SELECT family_id FROM refresh_tokens"
                " WHERE token_hash = %s AND user_id = %s) RETURNING id",
                (token_hash, user_id),
            )
            return bool(await cur.fetchall())

    async def insert_api_key(self, row: NewApiKeyRow, *, max_live: int) -> ApiKeyRecord | None:
        try:
            async with self._db.tenant_transaction(row.tenant_id) as conn:
                # Serialises creations in one tenant so the cap holds; NO KEY keeps foreign-key
                # checks of other tables' inserts unblocked.
                await conn.execute(
                    "SELECT 1 FROM tenants WHERE id = %s FOR NO KEY UPDATE", (row.tenant_id,)
                )
                # The explicit tenant_id lets the planner use the tenant's index; the policies
                # alone (an OR of three, one of them "any revoked key") would also read every
                # tenant's revoked keys (tests/integration/test_query_plans.py).
                cur = await conn.execute(
                    "SELECT count(*) AS live FROM api_keys WHERE tenant_id = %s"
                    " AND revoked_at IS NULL",
                    (row.tenant_id,),
                )
                counted = await cur.fetchone()
                if counted is not None and counted["live"] >= max_live:
                    return None
                cur = await conn.execute(
                    "INSERT INTO api_keys (id, tenant_id, user_id, name, prefix, secret_hash, role)"  # noqa: S608
                    f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_API_KEY_COLUMNS}",
                    (
                        row.id,
                        row.tenant_id,
                        row.user_id,
                        row.name,
                        row.prefix,
                        row.secret_hash,
                        row.role,
                    ),
                )
                inserted = await cur.fetchone()
                if inserted is None:
                    raise RuntimeError("INSERT ... RETURNING returned no row")
                await audit.record(
                    conn,
                    row.tenant_id,
                    audit.AuditEvent(
                        "api_key.create",
                        "api_key",
                        row.id,
                        details={"prefix": row.prefix, "role": row.role, "name": row.name},
                    ),
                )
        except psycopg.errors.UniqueViolation as exc:
            raise AlreadyExists("an API key with this prefix exists") from exc
        return _api_key(inserted)

    async def list_api_keys(self, tenant_id: str) -> list[ApiKeyRecord]:
        async with self._db.tenant_transaction(tenant_id) as conn:
            # tenant_id explicit for the tenant's index, as in insert_api_key.
            cur = await conn.execute(
                f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = %s"  # noqa: S608
                " AND revoked_at IS NULL ORDER BY created_at DESC, id DESC",
                (tenant_id,),
            )
            rows = await cur.fetchall()
        return [_api_key(row) for row in rows]

    @asynccontextmanager
    async def revoking_api_key(self, tenant_id: str, key_id: str) -> AsyncIterator[bool]:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL"
                " RETURNING prefix",
                (key_id,),
            )
            revoked = await cur.fetchone()
            if revoked is not None:
                await audit.record(
                    conn,
                    tenant_id,
                    audit.AuditEvent(
                        "api_key.revoke", "api_key", key_id, details={"prefix": revoked["prefix"]}
                    ),
                )
            yield revoked is not None


async def insert_member(conn: Connection, user: UserRecord) -> None:
    """Inserts a new user (created in `user.tenant_id`, the transaction's tenant) and its
    membership there; the membership first, so that 0013's trigger, which does the same for
    release N-1's inserts, finds it."""
    await conn.execute(
        _INSERT_MEMBERSHIP,
        (user.tenant_id, user.id, user.email, user.role, user.created_at, user.created_at),
    )
    await conn.execute(
        _INSERT_USER,
        (user.id, user.tenant_id, user.email, user.password_hash, user.role, user.created_at),
    )
