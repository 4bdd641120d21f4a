"""The audit trail in PostgreSQL: append-only for the services, chained, verifiable, prunable.

Events are recorded by the services' own `record` as the application role; tampering is done
as the tables' owner, the only role that can, and the verifier must name the row.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.common.audit import Actor, AuditEvent, Origin, record
from services.common.audit_chain import verify
from services.common.audit_store import anchor, chain_rows, chained_tenants, prune, verify_tenant
from services.common.db import Database
from tests.unit.webhook.harness import Scratch

pytestmark = pytest.mark.integration

ALICE = Actor("user", "0b4f3f43-5a53-4a0e-9d8e-3f6f1a3c2a11")
ORIGIN = Origin("203.0.113.7", "pytest/1", "req-1")


async def record_events(db: Database, tenant_id: str, count: int, action: str = "lattice.create"):
    for n in range(count):
        async with db.tenant_transaction(tenant_id) as conn:
            await record(
                conn,
                tenant_id,
                AuditEvent(action, "lattice", f"lattice-{n}", details={"n": n}),
                actor=ALICE,
                origin=ORIGIN,
            )


def new_tenant(scratch: Scratch) -> str:
    tenant_id = str(uuid.uuid4())
    scratch.add_tenant(tenant_id)
    return tenant_id


def owner_verdict(scratch: Scratch, tenant_id: str):
    with psycopg.connect(scratch.admin_url) as conn:
        return verify_tenant(conn, tenant_id)


def as_owner(scratch: Scratch, tenant_id: str, statement: str, params=()) -> None:
    with psycopg.connect(scratch.admin_url) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        conn.execute(statement, params)


async def test_recorded_events_form_an_intact_chain(db: Database, scratch: Scratch) -> None:
    tenant = new_tenant(scratch)
    await record_events(db, tenant, 5)
    verdict = owner_verdict(scratch, tenant)
    assert verdict.intact, verdict.fault
    assert verdict.rows == 5
    with psycopg.connect(scratch.admin_url) as conn, conn.transaction():
        rows = list(chain_rows(conn, tenant))
    assert [row["seq"] for row in rows] == [1, 2, 3, 4, 5]
    first = rows[0]
    assert (first["actor_type"], first["actor_id"]) == ("user", ALICE.id)
    assert (first["client_address"], first["user_agent"], first["request_id"]) == (
        "203.0.113.7",
        "pytest/1",
        "req-1",
    )
    assert first["details"] == {"n": 0}
    assert bytes(first["prev_hash"]) == bytes(32)
    assert all(bytes(b["prev_hash"]) == bytes(a["hash"]) for a, b in itertools.pairwise(rows))


async def test_concurrent_appends_leave_no_gap(db: Database, scratch: Scratch) -> None:
    tenant = new_tenant(scratch)
    await asyncio.gather(*(record_events(db, tenant, 4) for _ in range(6)))
    verdict = owner_verdict(scratch, tenant)
    assert verdict.intact, verdict.fault
    assert verdict.rows == 24


async def test_the_application_role_cannot_rewrite_history(db: Database, scratch: Scratch) -> None:
    tenant = new_tenant(scratch)
    await record_events(db, tenant, 2)
    for statement in (
        "UPDATE audit_events SET target_id = 'forged' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
        "UPDATE audit_chain_heads SET pruned_seq = 1",
        "DELETE FROM audit_chain_heads",
        "TRUNCATE audit_events",
    ):
        with psycopg.connect(scratch.app_url) as conn, conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert owner_verdict(scratch, tenant).rows == 2


async def test_another_tenant_sees_and_writes_none_of_the_trail(
    db: Database, scratch: Scratch
) -> None:
    mine, theirs = new_tenant(scratch), new_tenant(scratch)
    await record_events(db, mine, 3)
    async with db.tenant_transaction(theirs) as conn:
        cur = await conn.execute("SELECT count(*) FROM audit_events")
        assert (await cur.fetchone())["count"] == 0
        cur = await conn.execute("SELECT count(*) FROM audit_chain_heads")
        assert (await cur.fetchone())["count"] == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        async with db.tenant_transaction(theirs) as conn:
            await record(conn, mine, AuditEvent("lattice.create", "lattice", "x"), actor=ALICE)


@pytest.mark.parametrize(
    ("tamper", "fault"),
    [
        ("UPDATE audit_events SET target_id = 'forged' WHERE seq = 3", "row seq 3 .*edited"),
        ("UPDATE audit_events SET details = '{\"n\": 9}' WHERE seq = 2", "row seq 2 .*edited"),
        ("DELETE FROM audit_events WHERE seq = 3", "row seq 4 .*seq 3 missing"),
        ("DELETE FROM audit_events WHERE seq >= 4", "ends at seq 3 but its head says seq 5"),
        (
            "UPDATE audit_events SET occurred_at = occurred_at - interval '1 day' WHERE seq = 1",
            "row seq 1 .*edited",
        ),
    ],
)
async def test_tampering_as_the_owner_is_detected_naming_the_row(
    db: Database, scratch: Scratch, tamper: str, fault: str
) -> None:
    tenant = new_tenant(scratch)
    await record_events(db, tenant, 5)
    as_owner(scratch, tenant, tamper)
    verdict = owner_verdict(scratch, tenant)
    assert not verdict.intact
    assert verdict.fault is not None
    assert re.search(fault, verdict.fault), verdict.fault


async def test_rehashing_a_forged_row_still_breaks_the_next_link(
    db: Database, scratch: Scratch
) -> None:
    """A forger who recomputes the edited row's hash must recompute every later row too; the
    head keeps the original last hash."""
    from services.common.audit_chain import chain_hash

    tenant = new_tenant(scratch)
    await record_events(db, tenant, 3)
    with psycopg.connect(scratch.admin_url) as conn, conn.transaction():
        rows = list(chain_rows(conn, tenant))
    forged = {**rows[1], "target_id": "forged"}
    as_owner(
        scratch,
        tenant,
        "UPDATE audit_events SET target_id = 'forged', hash = %s WHERE seq = 2",
        (chain_hash(bytes(forged["prev_hash"]), forged),),
    )
    verdict = owner_verdict(scratch, tenant)
    assert verdict.fault is not None
    assert "row seq 3" in verdict.fault, verdict.fault


async def test_retention_prunes_the_oldest_and_the_chain_still_verifies(
    db: Database, scratch: Scratch
) -> None:
    tenant = new_tenant(scratch)
    await record_events(db, tenant, 4)
    as_owner(
        scratch,
        tenant,
        "UPDATE audit_events SET occurred_at = now() - interval '400 days' WHERE seq <= 2",
    )
    # The back-dating is itself an edit; re-anchor by pruning exactly those rows.
    with psycopg.connect(scratch.admin_url) as conn:
        assert tenant in chained_tenants(conn)
        deleted = prune(conn, tenant, datetime.now(UTC) - timedelta(days=365))
        assert deleted == 2
        start = anchor(conn, tenant)
    assert (start.pruned_seq, start.head_seq) == (2, 4)
    verdict = owner_verdict(scratch, tenant)
    assert verdict.intact, verdict.fault
    assert verdict.rows == 2
    # Removing the new first row is still seen.
    as_owner(scratch, tenant, "DELETE FROM audit_events WHERE seq = 3")
    assert "seq 3 missing" in (owner_verdict(scratch, tenant).fault or "")


def test_the_verifier_on_rows_alone() -> None:
    """No rows, no anchor: an empty chain is intact."""
    assert verify([]).intact
