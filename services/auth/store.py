"""PostgreSQL persistence for the auth domain, under row-level security."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg

from services.auth.accounts import TenantRecord, UserRecord
from services.common.db import Database
from services.common.errors import AlreadyExists

_USER_COLUMNS = "id::text, email, tenant_id::text, role, created_at, password_hash"


def _user(row: dict[str, Any]) -> UserRecord:
    return UserRecord(
        id=row["id"],
        email=row["email"],
        tenant_id=row["tenant_id"],
        role=row["role"],
        created_at=row["created_at"],
        password_hash=row["password_hash"],
    )


class PostgresAuthStore:
    """AuthStore on PostgreSQL; every statement runs in a tenant or lookup context."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_tenant_with_owner(self, tenant: TenantRecord, user: UserRecord) -> None:
        try:
            async with self._db.tenant_transaction(tenant.id) as conn:
                await conn.execute(
                    "INSERT INTO tenants (id, name, plan) VALUES (%s, %s, %s)",
                    (tenant.id, tenant.name, tenant.plan),
                )
                await conn.execute(
                    "INSERT INTO users (id, tenant_id, email, password_hash, role, created_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        user.id,
                        tenant.id,
                        user.email,
                        user.password_hash,
                        user.role,
                        user.created_at,
                    ),
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

    async def get_user(self, tenant_id: str, user_id: str) -> UserRecord | None:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE id = %s",  # noqa: S608
                (user_id,),
            )
            row = await cur.fetchone()
        return _user(row) if row else None

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
