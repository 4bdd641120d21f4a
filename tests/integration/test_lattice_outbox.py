"""The outbox and its relay, with a real lattice server, real PostgreSQL and a recording
WebhookService: every change's event arrives once, and none is lost while the webhook service
is down.

The lattice server here runs on a scratch database built from migrations/, so the stack's own
lattice process (whose relay publishes to the stack's webhook service) never sees these rows.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import psycopg
import pytest
from catalytic.lattice.v1 import lattice_service_pb2 as pb
from catalytic.lattice.v1 import lattice_service_pb2_grpc as pb_grpc
from psycopg import sql

from services.common.db import Database, open_pool
from services.common.migrate import migrate
from services.common.server import RunningService
from services.lattice.config import LatticeConfig
from services.lattice.metrics import Backlog
from services.lattice.outbox_store import PostgresOutbox
from services.lattice.server import create_server
from tests.e2e.helpers import register_and_login
from tests.unit.lattice.fake_webhook import TOKEN, FakeWebhook
from tests.unit.webhook.harness import add_membership

if TYPE_CHECKING:
    Stub = pb_grpc.LatticeServiceAsyncStub

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scratch:
    admin_url: str
    app_url: str

    def rows(self) -> list[tuple[str, str, str, int]]:
        """(id, tenant, type, attempts) of every event not sent yet, oldest first (read as the
        owner)."""
        with psycopg.connect(self.admin_url) as conn:
            found = conn.execute(
                "SELECT id::text, tenant_id::text, event_type, attempts FROM lattice_outbox"
                " WHERE sent_at IS NULL ORDER BY seq"
            ).fetchall()
        return [(row[0], row[1], row[2], row[3]) for row in found]

    def add_tenant(self, tenant_id: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn, conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
            conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'relay')", (tenant_id,))


@pytest.fixture
def scratch(stack: Any) -> Iterator[Scratch]:
    admin_url = stack.env["DATABASE_ADMIN_URL"]
    name = f"outbox_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        scratch_admin = admin_url.rsplit("/", 1)[0] + "/" + name
        migrate(scratch_admin, MIGRATIONS, out=io.StringIO())
        yield Scratch(scratch_admin, stack.env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
async def webhook() -> AsyncIterator[FakeWebhook]:
    fake = FakeWebhook()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def lattice(
    stack: Any, scratch: Scratch, webhook: FakeWebhook
) -> AsyncIterator[RunningService]:
    config = LatticeConfig.from_env(
        {
            **stack.env,
            "DATABASE_URL": scratch.app_url,
            "LATTICE_PORT": "0",
            "COMPUTE_WORKERS": "1",
            "WEBHOOK_ADDR": f"127.0.0.1:{webhook.port}",
            "INTERNAL_TOKEN": TOKEN,
            "OUTBOX_POLL_INTERVAL_S": "0.2",
            "OUTBOX_BACKOFF_BASE_S": "0.2",
            "OUTBOX_BACKOFF_MAX_S": "1",
            "OUTBOX_LEASE_S": "5",
        }
    )
    running = await create_server(config)
    await running.set_serving()
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def stub(lattice: RunningService) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{lattice.port}") as channel:
        yield pb_grpc.LatticeServiceStub(channel)


@pytest.fixture
def tenants(stack: Any, scratch: Scratch) -> Callable[[], tuple[str, Metadata]]:
    """Makes tenants: registered with the stack's auth (for tokens), present in the scratch
    database (for the lattice service)."""

    def make() -> tuple[str, Metadata]:
        with httpx.Client(base_url=stack.gateway_url, timeout=10, trust_env=False) as gateway:
            tenant = register_and_login(gateway)
        scratch.add_tenant(tenant.tenant_id)
        add_membership(scratch.admin_url, tenant)
        return tenant.tenant_id, (("authorization", f"Bearer {tenant.access_token}"),)

    return make


async def eventually(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {timeout_s} s: {check.__doc__ or check}")


async def changes(stub: Stub, auth: Metadata) -> None:
    """One of each event type the lattice service announces on success."""
    lattice = await stub.CreateLattice(
        pb.CreateLatticeRequest(name="e", dimensions=2, size=5, constant=pb.ConstantFill(value=1)),
        metadata=auth,
    )
    await stub.TransformLattice(
        pb.TransformLatticeRequest(id=lattice.id, xor=pb.XorOp(key=7)), metadata=auth
    )
    await stub.FindPath(pb.FindPathRequest(id=lattice.id, start=[0, 0], end=[4, 4]), metadata=auth)
    await stub.DeleteLattice(pb.DeleteLatticeRequest(id=lattice.id), metadata=auth)


EXPECTED_TYPES = ["lattice.created", "lattice.transformed", "path.computed", "lattice.deleted"]


async def test_every_change_is_published_once_for_its_tenant(
    stub: Stub,
    webhook: FakeWebhook,
    scratch: Scratch,
    tenants: Callable[[], tuple[str, Metadata]],
) -> None:
    first, first_auth = tenants()
    second, second_auth = tenants()
    await changes(stub, first_auth)
    await changes(stub, second_auth)

    await eventually(lambda: len(webhook.published) == 8 and not scratch.rows())
    for tenant in (first, second):
        mine = [event for event in webhook.published if event.tenant_id == tenant]
        assert [event.event_type for event in mine] == EXPECTED_TYPES
    assert set(webhook.counts().values()) == {1}
    created = webhook.published[0]
    assert created.data["name"] == "e"
    assert created.data["vertex_count"] == 25
    transformed = webhook.published[1]
    assert transformed.data["op"] == {"xor": {"key": 7}}
    assert transformed.data["version"] == 2
    path = webhook.published[2]
    assert (path.data["hops"], path.data["algorithm"]) == (8, "BFS")


async def test_nothing_is_lost_while_the_webhook_service_is_down(
    stub: Stub,
    webhook: FakeWebhook,
    scratch: Scratch,
    tenants: Callable[[], tuple[str, Metadata]],
) -> None:
    tenant, auth = tenants()
    await webhook.stop()
    # Changes go on as usual: the webhook service is not on their path.
    await changes(stub, auth)
    await changes(stub, auth)
    waiting = scratch.rows()
    assert [row[2] for row in waiting] == EXPECTED_TYPES * 2
    assert {row[1] for row in waiting} == {tenant}

    def retried() -> bool:
        """the relay has tried and failed while the webhook service was down"""
        return any(attempts > 0 for *_, attempts in scratch.rows())

    await eventually(retried)
    assert webhook.published == []

    await webhook.start()  # the same port
    await eventually(lambda: not scratch.rows())
    assert webhook.counts() == {row[0]: 1 for row in waiting}
    assert [event.event_type for event in webhook.published] == EXPECTED_TYPES * 2


async def test_the_relay_reads_across_tenants_and_nothing_more(
    stub: Stub, scratch: Scratch, webhook: FakeWebhook, tenants: Callable[[], tuple[str, Metadata]]
) -> None:
    await webhook.stop()
    tenant, auth = tenants()
    await changes(stub, auth)
    with psycopg.connect(scratch.app_url, autocommit=True) as app:
        with app.transaction():
            assert app.execute("SELECT count(*) FROM lattice_outbox").fetchone() == (0,)
        with app.transaction():
            app.execute("SELECT set_config('app.lookup_outbox_relay', 'lattice', true)")
            assert app.execute("SELECT count(*) FROM lattice_outbox").fetchone() == (4,)
            # Reading is all the lookup opens: no writes, no deletes, no other table.
            assert app.execute("UPDATE lattice_outbox SET attempts = 0").rowcount == 0
            assert app.execute("DELETE FROM lattice_outbox").rowcount == 0
            assert app.execute("SELECT count(*) FROM lattices").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(
                    "INSERT INTO lattice_outbox (id, tenant_id, event_type, data)"
                    " VALUES (%s, %s, 'lattice.created', '{}')",
                    (str(uuid.uuid4()), tenant),
                )
        with app.transaction():
            app.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
            # Even the row's own tenant cannot rewrite an event, only its bookkeeping.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("UPDATE lattice_outbox SET data = '{}'")


async def test_the_backlog_counts_every_tenants_unsent_events_as_the_app_role(
    scratch: Scratch,
) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for tenant in (first, second):
        scratch.add_tenant(tenant)
    with psycopg.connect(scratch.admin_url, autocommit=True) as conn:
        for tenant, age_s, sent in ((first, 120, False), (second, 30, False), (first, 600, True)):
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
                conn.execute(
                    "INSERT INTO lattice_outbox (id, tenant_id, event_type, data, occurred_at,"
                    " sent_at) VALUES (%s, %s, 'lattice.created', '{}',"
                    " clock_timestamp() - make_interval(secs => %s),"
                    " CASE WHEN %s THEN clock_timestamp() END)",
                    (str(uuid.uuid4()), tenant, age_s, sent),
                )
    pool = await open_pool(scratch.app_url, min_size=1, max_size=1, name="lattice")
    try:
        outbox = PostgresOutbox(Database(pool))
        backlog = await outbox.backlog()
        assert backlog.pending == 2  # both tenants', the sent one not
        assert 120 <= backlog.oldest_age_s < 180
        with psycopg.connect(scratch.admin_url, autocommit=True) as conn:
            for tenant in (first, second):
                with conn.transaction():
                    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
                    conn.execute("UPDATE lattice_outbox SET sent_at = clock_timestamp()")
        assert await outbox.backlog() == Backlog(0, 0.0)
    finally:
        await pool.close()
