"""PostgreSQL persistence of memberships and invitations, under row-level security."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from services.auth.accounts import TenantRecord, UserRecord
from services.auth.invitations import InvitationRecord, NewInvitation
from services.auth.membership import MemberRecord
from services.auth.store import MEMBER_COLUMNS, PostgresAuthStore, insert_member, lock_looked_up
from services.common import audit
from services.common.db import Connection, Database
from services.common.errors import AlreadyExists

_INVITATION_COLUMNS = (
    "id::text, tenant_id::text, email, role, invited_by::text, created_at, expires_at,"
    " (accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now()) AS pending"
)
# Pending invitations, as the partial index invitations_pending_idx has them (plus expiry).
_PENDING = "accepted_at IS NULL AND revoked_at IS NULL"
# Serialises membership changes in one tenant, so that "the last owner" holds; NO KEY keeps
# foreign-key checks of other tables' inserts unblocked.
_LOCK_TENANT = "SELECT 1 FROM tenants WHERE id = %s FOR NO KEY UPDATE"


def _invitation(row: dict[str, Any]) -> InvitationRecord:
    return InvitationRecord(**row)


class _MembershipChange:
    """MembershipChange over the open transaction that holds the tenant's lock."""

    def __init__(self, conn: Connection, member: MemberRecord | None, owners: int) -> None:
        self._conn = conn
        self._member = member
        self._owners = owners

    @property
    def member(self) -> MemberRecord | None:
        return self._member

    @property
    def owners(self) -> int:
        return self._owners

    def _locked(self) -> MemberRecord:
        if self._member is None:
            raise RuntimeError("no membership in this change")
        return self._member

    async def set_role(self, role: str) -> MemberRecord:
        member = self._locked()
        cur = await self._conn.execute(
            f"UPDATE memberships SET role = %s, updated_at = now() WHERE user_id = %s"  # noqa: S608
            f" RETURNING {MEMBER_COLUMNS}",
            (role, member.user_id),
        )
        row = await cur.fetchone()
        # Release N-1 issues tokens with users.role: kept equal to the role in the tenant the
        # account was created in (row-level security limits this to that tenant's row).
        await self._conn.execute(
            "UPDATE users SET role = %s, updated_at = now() WHERE id = %s", (role, member.user_id)
        )
        if row is None:
            raise RuntimeError("UPDATE ... RETURNING returned no row")
        changed = MemberRecord(**row)
        if member.role != role:
            await audit.record(
                self._conn,
                changed.tenant_id,
                audit.AuditEvent(
                    "member.role_change",
                    "user",
                    member.user_id,
                    details={"from": member.role, "to": role},
                ),
            )
        return changed

    async def remove(self) -> None:
        # Refresh tokens, API keys and invitations sent cascade (migration 0013).
        member = self._locked()
        await self._conn.execute("DELETE FROM memberships WHERE user_id = %s", (member.user_id,))
        await audit.record(
            self._conn,
            member.tenant_id,
            audit.AuditEvent(
                "member.remove", "user", member.user_id, details={"role": member.role}
            ),
        )


class _AcceptSession:
    """AcceptSession over the open transaction that holds the invitation's row lock."""

    def __init__(self, conn: Connection, invitation: InvitationRecord | None) -> None:
        self._conn = conn
        self._invitation = invitation

    @property
    def invitation(self) -> InvitationRecord | None:
        return self._invitation

    def _locked(self) -> InvitationRecord:
        if self._invitation is None:
            raise RuntimeError("no invitation in this session")
        return self._invitation

    async def is_member(self, user_id: str) -> bool:
        cur = await self._conn.execute("SELECT 1 FROM memberships WHERE user_id = %s", (user_id,))
        return await cur.fetchone() is not None

    async def tenant(self) -> TenantRecord:
        invitation = self._locked()
        cur = await self._conn.execute(
            "SELECT id::text, name, plan FROM tenants WHERE id = %s", (invitation.tenant_id,)
        )
        row = await cur.fetchone()
        if row is None:
            raise RuntimeError("an invitation without its tenant")
        return TenantRecord(**row)

    async def join(self, user_id: str, email: str) -> None:
        invitation = self._locked()
        await self._conn.execute(
            "INSERT INTO memberships (tenant_id, user_id, email, role) VALUES (%s, %s, %s, %s)",
            (invitation.tenant_id, user_id, email, invitation.role),
        )
        await self._spend(user_id, new_account=False)

    async def join_new(self, user: UserRecord) -> None:
        invitation = self._locked()
        joined = dataclasses.replace(user, tenant_id=invitation.tenant_id, role=invitation.role)
        try:
            async with self._conn.transaction():
                await insert_member(self._conn, joined)
        except psycopg.errors.UniqueViolation as exc:
            raise AlreadyExists(
                "an account with this e-mail exists now; accept with its password"
            ) from exc
        await audit.record(
            self._conn,
            invitation.tenant_id,
            audit.AuditEvent(
                "user.create",
                "user",
                user.id,
                details={"role": invitation.role, "via": "invitation"},
            ),
            actor=audit.Actor("user", user.id),
        )
        await self._spend(user.id, new_account=True)

    async def _spend(self, user_id: str, *, new_account: bool) -> None:
        invitation = self._locked()
        await self._conn.execute(
            "UPDATE invitations SET accepted_at = now(), accepted_by = %s WHERE id = %s",
            (user_id, invitation.id),
        )
        await audit.record(
            self._conn,
            invitation.tenant_id,
            audit.AuditEvent(
                "invitation.accept",
                "invitation",
                invitation.id,
                details={"role": invitation.role, "new_account": new_account},
            ),
            actor=audit.Actor("user", user_id),
        )


class PostgresTeamStore:
    """MemberStore and InvitationStore on PostgreSQL; every statement runs in a tenant or lookup
    context."""

    def __init__(self, db: Database, accounts: PostgresAuthStore) -> None:
        self._db = db
        self._accounts = accounts

    async def list_members(self, tenant_id: str) -> list[MemberRecord]:
        rows = await self._db.tenant_statement(
            tenant_id,
            f"SELECT {MEMBER_COLUMNS} FROM memberships WHERE tenant_id = %s"  # noqa: S608
            " ORDER BY created_at, user_id",
            (tenant_id,),
        )
        return [MemberRecord(**row) for row in rows]

    async def tenants_of(self, email: str) -> list[tuple[TenantRecord, MemberRecord]]:
        return await self._accounts.tenants_of(email)

    @asynccontextmanager
    async def changing_member(
        self, tenant_id: str, user_id: str
    ) -> AsyncIterator[_MembershipChange]:
        async with self._db.tenant_transaction(tenant_id) as conn:
            await conn.execute(_LOCK_TENANT, (tenant_id,))
            cur = await conn.execute(
                f"SELECT {MEMBER_COLUMNS} FROM memberships WHERE tenant_id = %s"  # noqa: S608
                " AND user_id = %s",
                (tenant_id, user_id),
            )
            row = await cur.fetchone()
            cur = await conn.execute(
                "SELECT count(*) AS owners FROM memberships WHERE tenant_id = %s"
                " AND role = 'owner'",
                (tenant_id,),
            )
            counted = await cur.fetchone()
            owners = int(counted["owners"]) if counted else 0
            yield _MembershipChange(conn, MemberRecord(**row) if row else None, owners)

    async def insert_invitation(
        self, row: NewInvitation, *, max_pending: int
    ) -> InvitationRecord | None:
        try:
            async with self._db.tenant_transaction(row.tenant_id) as conn:
                await conn.execute(_LOCK_TENANT, (row.tenant_id,))
                cur = await conn.execute(
                    "SELECT 1 FROM memberships WHERE tenant_id = %s AND email = %s",
                    (row.tenant_id, row.email),
                )
                if await cur.fetchone() is not None:
                    raise AlreadyExists("email: this address belongs to a member already")
                # A new invitation replaces the address's pending one: its token stops working.
                await conn.execute(
                    f"UPDATE invitations SET revoked_at = now() WHERE tenant_id = %s"  # noqa: S608
                    f" AND email = %s AND {_PENDING}",
                    (row.tenant_id, row.email),
                )
                cur = await conn.execute(
                    f"SELECT count(*) AS pending FROM invitations WHERE tenant_id = %s"  # noqa: S608
                    f" AND {_PENDING} AND expires_at > now()",
                    (row.tenant_id,),
                )
                counted = await cur.fetchone()
                if counted is not None and counted["pending"] >= max_pending:
                    return None
                cur = await conn.execute(
                    "INSERT INTO invitations (id, tenant_id, email, role, invited_by, token_hash,"  # noqa: S608
                    f" expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    f" RETURNING {_INVITATION_COLUMNS}",
                    (
                        row.id,
                        row.tenant_id,
                        row.email,
                        row.role,
                        row.invited_by,
                        row.token_hash,
                        row.expires_at,
                    ),
                )
                inserted = await cur.fetchone()
                if inserted is None:
                    raise RuntimeError("INSERT ... RETURNING returned no row")
                await audit.record(
                    conn,
                    row.tenant_id,
                    audit.AuditEvent(
                        "invitation.create",
                        "invitation",
                        row.id,
                        details={"email": row.email, "role": row.role},
                    ),
                )
        except psycopg.errors.UniqueViolation as exc:
            # 256 random bits do not collide; an id clash is as unlikely. Retrying is right.
            raise AlreadyExists("an invitation with this token exists; retry") from exc
        if inserted is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        return _invitation(inserted)

    async def list_invitations(self, tenant_id: str) -> list[InvitationRecord]:
        rows = await self._db.tenant_statement(
            tenant_id,
            f"SELECT {_INVITATION_COLUMNS} FROM invitations WHERE tenant_id = %s"  # noqa: S608
            f" AND {_PENDING} AND expires_at > now() ORDER BY created_at DESC, id DESC",
            (tenant_id,),
        )
        return [_invitation(row) for row in rows]

    async def revoke_invitation(self, tenant_id: str, invitation_id: str) -> bool:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute(
                f"UPDATE invitations SET revoked_at = now() WHERE id = %s AND {_PENDING}"  # noqa: S608
                " AND expires_at > now() RETURNING email, role",
                (invitation_id,),
            )
            revoked = await cur.fetchone()
            if revoked is None:
                return False
            await audit.record(
                conn,
                tenant_id,
                audit.AuditEvent(
                    "invitation.revoke",
                    "invitation",
                    invitation_id,
                    details={"email": revoked["email"], "role": revoked["role"]},
                ),
            )
        return True

    async def find_invitation(self, token_hash: str) -> InvitationRecord | None:
        # The invitations_token_lookup policy admits exactly the row with this hash, read-only.
        async with self._db.lookup_transaction(invitation_token_hash=token_hash) as conn:
            cur = await conn.execute(
                f"SELECT {_INVITATION_COLUMNS} FROM invitations"  # noqa: S608
                " WHERE token_hash = %s",
                (token_hash,),
            )
            row = await cur.fetchone()
        return _invitation(row) if row else None

    @asynccontextmanager
    async def accepting_invitation(self, token_hash: str) -> AsyncIterator[_AcceptSession]:
        # Found through the look-up policy; with its tenant set, the isolation policy lets the
        # same transaction lock and update it.
        async with self._db.lookup_transaction(invitation_token_hash=token_hash) as conn:
            # A concurrent acceptance waits for the lock, then finds it spent.
            row = await lock_looked_up(conn, "invitations", _INVITATION_COLUMNS, token_hash)
            invitation = _invitation(row) if row is not None else None
            yield _AcceptSession(conn, invitation)
