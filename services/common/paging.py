"""Newest-first keyset pagination: page sizes and opaque page tokens over (created_at, id)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MALFORMED = "is not a valid page token; pass next_page_token from the previous page unchanged"


@dataclass(frozen=True)
class Cursor:
    """The last item of a page: the next page starts strictly after it."""

    created_at: datetime
    id: str


def page_size(requested: int) -> int:
    """0 means the default; 1..MAX_PAGE_SIZE as asked; anything else InvalidArgument."""
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= requested <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            "page_size", f"must be 0 (default {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}"
        )
    return requested


def encode_page_token(cursor: Cursor) -> str:
    """An opaque, URL-safe token for the page after `cursor`."""
    payload = json.dumps(
        {"t": cursor.created_at.isoformat(), "i": cursor.id}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(payload.encode()).decode("ascii").rstrip("=")


def decode_page_token(token: str) -> Cursor | None:
    """The cursor a token names; None for the first page; InvalidArgument(page_token) if bad."""
    if not token:
        return None
    if not _TOKEN.fullmatch(token):
        raise InvalidArgument("page_token", _MALFORMED)
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        created_at = datetime.fromisoformat(payload["t"])
        item_id = str(uuid.UUID(payload["i"]))
    except (binascii.Error, ValueError, TypeError, KeyError, AttributeError):
        raise InvalidArgument("page_token", _MALFORMED) from None
    if created_at.tzinfo is None:
        raise InvalidArgument("page_token", _MALFORMED)
    return Cursor(created_at=created_at, id=item_id)


def newest_first_query(
    columns: str, table: str, tenant_id: str, *, limit: int, after: Cursor | None
) -> tuple[str, tuple[object, ...]]:
    """SQL and parameters for one page of `table`, newest first, strictly after `after`.

    `columns` and `table` are the caller's constants, never input. The explicit tenant_id lets
    the planner use the (tenant_id, created_at, id) listing index; RLS still applies.
    """
    where = "tenant_id = %s"
    params: tuple[object, ...] = (tenant_id,)
    if after is not None:
        where += " AND (created_at, id) < (%s, %s)"
        params += (after.created_at, after.id)
    query = (
        f"SELECT {columns} FROM {table} WHERE {where} ORDER BY created_at DESC, id DESC LIMIT %s"  # noqa: S608
    )
    return query, (*params, limit)
