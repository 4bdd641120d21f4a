"""The audit trail's operator commands: verify a chain, export it for a SIEM, apply retention.

Run through `python -m services.auth.admin {verify-audit,export-audit,prune-audit}` as the
tables' owner (DATABASE_ADMIN_URL): the services' role may not delete, and only the owner may
list every tenant's chain. Each command is itself recorded in the trail, as every operator
command is (docs/operations/audit.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from psycopg import Connection

from services.common import audit, audit_store
from services.common.audit_chain import export_line

RETENTION_VARIABLE = "AUDIT_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 365


class AuditCommandError(Exception):
    """A failure to report in one line (a bad retention)."""


def retention_days(value: int | None = None) -> int:
    """--older-than-days, else AUDIT_RETENTION_DAYS, else a year; at least one day."""
    if value is None:
        text = os.environ.get(RETENTION_VARIABLE, "").strip()
        try:
            value = int(text) if text else DEFAULT_RETENTION_DAYS
        except ValueError:
            raise AuditCommandError(
                f"{RETENTION_VARIABLE}={text!r} is not a number of days"
            ) from None
    if value < 1:
        raise AuditCommandError(f"retention must be at least 1 day, got {value}")
    return value


def verify_audit(conn: Connection[Any], tenant_id: str) -> tuple[str, bool]:
    """Checks the tenant's chain; the line to print, and whether it is intact."""
    verdict = audit_store.verify_tenant(conn, tenant_id)
    audit.record_alone(
        conn,
        tenant_id,
        audit.AuditEvent(
            "audit.verify",
            "tenant",
            tenant_id,
            audit.SUCCESS if verdict.intact else audit.FAILURE,
            "" if verdict.intact else "chain_broken",
            {"rows": verdict.rows},
        ),
    )
    if verdict.intact:
        return f"tenant {tenant_id}: audit chain intact ({verdict.rows} events checked)", True
    return f"tenant {tenant_id}: audit chain BROKEN: {verdict.fault}", False


def export_audit(
    conn: Connection[Any], tenant_id: str, out: TextIO, since: datetime | None = None
) -> int:
    """Writes the tenant's events, oldest first, as JSON lines; how many."""
    count = 0
    with conn.transaction():
        for row in audit_store.chain_rows(conn, tenant_id, since=since):
            out.write(export_line(row) + "\n")
            count += 1
    audit.record_alone(
        conn,
        tenant_id,
        audit.AuditEvent(
            "audit.export",
            "tenant",
            tenant_id,
            details={"rows": count, "since": since.isoformat() if since else ""},
        ),
    )
    return count


def prune_audit(
    conn: Connection[Any],
    days: int,
    *,
    tenant_id: str | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[str]:
    """Deletes events older than `days` from one tenant's chain, or every chain's; a line per
    chain that lost rows. Each chain's new start is kept, so the verifier still checks the
    rest; each pruned chain records what was pruned."""
    before = now() - timedelta(days=days)
    tenants = [tenant_id] if tenant_id else audit_store.chained_tenants(conn)
    lines = []
    for tenant in tenants:
        deleted = audit_store.prune(conn, tenant, before)
        if deleted:
            audit.record_alone(
                conn,
                tenant,
                audit.AuditEvent(
                    "audit.prune",
                    "tenant",
                    tenant,
                    details={"rows": deleted, "older_than_days": days},
                ),
            )
            lines.append(
                f"tenant {tenant}: pruned {deleted} events before {before:%Y-%m-%d %H:%M} UTC"
            )
    return lines or [f"nothing older than {days} days in {len(tenants)} chain(s)"]


def parse_since(value: str) -> datetime:
    """An ISO 8601 time; without a zone, UTC."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
