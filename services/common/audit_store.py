"""Reading the audit trail back: a chain for the verifier and the export, retention's prune.

Blocking psycopg: the operator CLIs use these, on a connection as the tables' owner (row-level
security is forced on the owner too, so each function sets app.tenant_id for its transaction).
The API's paged reads are the auth service's (services/auth/audit_log.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row

from services.common.audit_chain import Anchor, Verdict, verify

ROW_COLUMNS = (
    "tenant_id, seq, id, occurred_at, actor_type, actor_id, action, target_type, target_id,"
    " outcome, reason, client_address, user_agent, request_id, details, prev_hash, hash"
)
# Rows are streamed in batches of this many: a year of a busy tenant's trail fits no memory.
BATCH_ROWS = 2_000


def _as_tenant(conn: Connection[Any], tenant_id: str) -> None:
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))


def anchor(conn: Connection[Any], tenant_id: str) -> Anchor:
    """Where the tenant's retained chain starts, and its head (an empty Anchor: no events)."""
    _as_tenant(conn, tenant_id)
    row = conn.execute(
        "SELECT seq, hash, pruned_seq, pruned_hash FROM audit_chain_heads WHERE tenant_id = %s",
        (tenant_id,),
    ).fetchone()
    if row is None:
        return Anchor(head_seq=0)
    return Anchor(
        pruned_seq=int(row[2]),
        pruned_hash=bytes(row[3]),
        head_seq=int(row[0]),
        head_hash=bytes(row[1]),
    )


def chain_rows(
    conn: Connection[Any], tenant_id: str, *, since: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """The tenant's events in seq order (from `since` on, when given), streamed."""
    _as_tenant(conn, tenant_id)
    query = f"SELECT {ROW_COLUMNS} FROM audit_events WHERE tenant_id = %s"  # noqa: S608
    params: list[Any] = [tenant_id]
    if since is not None:
        query += " AND occurred_at >= %s"
        params.append(since)
    with conn.cursor(name="audit_chain", row_factory=dict_row) as cur:
        cur.itersize = BATCH_ROWS
        cur.execute(query + " ORDER BY seq", params)
        yield from cur


def verify_tenant(conn: Connection[Any], tenant_id: str) -> Verdict:
    """The whole retained chain checked against its anchor and head, in one snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        start = anchor(conn, tenant_id)
        return verify(chain_rows(conn, tenant_id), start)


def prune(conn: Connection[Any], tenant_id: str, before: datetime) -> int:
    """Deletes the tenant's events older than `before` (retention), recording where the chain
    now starts; the count deleted. Needs the tables' owner: the services may not delete."""
    with conn.transaction():
        _as_tenant(conn, tenant_id)
        head = conn.execute(
            "SELECT seq FROM audit_chain_heads WHERE tenant_id = %s FOR UPDATE", (tenant_id,)
        ).fetchone()
        if head is None:
            return 0
        last = conn.execute(
            "SELECT seq, hash FROM audit_events WHERE tenant_id = %s AND occurred_at < %s"
            " ORDER BY seq DESC LIMIT 1",
            (tenant_id, before),
        ).fetchone()
        if last is None:
            return 0
        deleted = conn.execute(
            "DELETE FROM audit_events WHERE tenant_id = %s AND seq <= %s", (tenant_id, last[0])
        ).rowcount
        conn.execute(
            "UPDATE audit_chain_heads SET pruned_seq = %s, pruned_hash = %s WHERE tenant_id = %s",
            (last[0], last[1], tenant_id),
        )
        return deleted


def chained_tenants(conn: Connection[Any]) -> list[str]:
    """Every tenant with a chain, the platform's included (as the owner only: a policy of
    migration 0014 lets the owner list the heads across tenants)."""
    rows = conn.execute("SELECT tenant_id::text FROM audit_chain_heads ORDER BY 1").fetchall()
    return [row[0] for row in rows]
