"""GET /v1/audit-events: one page of the caller's tenant's audit trail, newest first."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.common import paging
from services.common.context import Principal
from services.common.db import Database
from services.common.errors import InvalidArgument
from services.common.paging import Cursor

_COLUMNS = (
    "id::text, seq, occurred_at, actor_type, actor_id, action, target_type, target_id,"
    " outcome, reason, client_address, user_agent, request_id, details, prev_hash, hash"
)
# An action, or a kind of action with ".*": what the table's CHECK admits, and no more.
_ACTION = re.compile(r"^[a-z_]+(\.[a-z_]+)*(\.\*)?$")
MAX_FILTER_LENGTH = 320


@dataclass(frozen=True)
class AuditFilter:
    """ListAuditEvents' filters, validated."""

    start: datetime | None = None
    end: datetime | None = None
    action: str = ""
    actor_id: str = ""


@dataclass(frozen=True)
class AuditPage:
    events: list[dict[str, Any]]
    next_page_token: str


def parse_time(field_name: str, value: str) -> datetime | None:
    """An RFC 3339 time with its offset (a bare date or zone-less time is ambiguous)."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidArgument(
            field_name, "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"
        ) from None
    if when.tzinfo is None:
        raise InvalidArgument(field_name, "needs a time zone offset, e.g. Z or +01:00")
    return when.astimezone(UTC)


def audit_filter(start_time: str, end_time: str, action: str, actor_id: str) -> AuditFilter:
    """The request's filters, each refused by name when malformed."""
    start = parse_time("start_time", start_time)
    end = parse_time("end_time", end_time)
    if start is not None and end is not None and end <= start:
        raise InvalidArgument("end_time", "must be after start_time")
    action = action.strip()
    if action and (len(action) > 64 or not _ACTION.fullmatch(action)):
        raise InvalidArgument(
            "action", 'must be an action like "auth.login", or a kind like "webhook.*"'
        )
    actor_id = actor_id.strip()
    if len(actor_id) > MAX_FILTER_LENGTH:
        raise InvalidArgument("actor_id", f"must be at most {MAX_FILTER_LENGTH} characters")
    return AuditFilter(start, end, action, actor_id)


def _query(
    tenant_id: str, found: AuditFilter, after: Cursor | None, limit: int
) -> tuple[str, list[Any]]:
    where = ["tenant_id = %s"]
    params: list[Any] = [tenant_id]
    if found.start is not None:
        where.append("occurred_at >= %s")
        params.append(found.start)
    if found.end is not None:
        where.append("occurred_at < %s")
        params.append(found.end)
    if found.action.endswith(".*"):
        where.append("starts_with(action, %s)")
        params.append(found.action[:-1])
    elif found.action:
        where.append("action = %s")
        params.append(found.action)
    if found.actor_id:
        where.append("actor_id = %s")
        params.append(found.actor_id)
    if after is not None:
        # The token names the last event of the page before; seq orders the chain exactly.
        where.append("seq < (SELECT seq FROM audit_events WHERE tenant_id = %s AND id = %s)")
        params += [tenant_id, after.id]
    query = (
        f"SELECT {_COLUMNS} FROM audit_events WHERE {' AND '.join(where)}"  # noqa: S608
        " ORDER BY seq DESC LIMIT %s"
    )
    return query, [*params, limit]


class AuditLog:
    """Pages of a tenant's audit events for its owners and admins (the permission table
    admits no one else)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(
        self, principal: Principal, found: AuditFilter, *, page_size: int, page_token: str
    ) -> AuditPage:
        limit = paging.page_size(page_size)
        after = paging.decode_page_token(page_token)
        query, params = _query(principal.tenant_id, found, after, limit + 1)
        rows = await self._db.tenant_statement(principal.tenant_id, query, params)
        page, more = list(rows[:limit]), len(rows) > limit
        token = ""
        if more:
            last = page[-1]
            token = paging.encode_page_token(
                Cursor(last["occurred_at"], str(uuid.UUID(last["id"])))
            )
        return AuditPage(events=page, next_page_token=token)
