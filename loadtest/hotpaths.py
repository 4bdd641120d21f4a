"""Every database method the services call on a request or in a background loop, run once.

The queries are not copied here: each step calls a method of the services' own stores
(services/*/store.py and friends) on a `Database` of the services' role, with the tenant
context they set, so what PostgreSQL plans is exactly what the services send. A step names the
methods it covers ("PostgresLatticeStore.get"); `uncovered()` lists public methods of the
stores that no step calls, so a new query cannot slip past the plan check
(tests/integration/test_query_plans.py) unnoticed.

The steps run against a database seeded by loadtest/dbseed.py: they find rows by the seed's
derived ids (`seeded_id`). `on_step_end` is called after each step with its name; the plan
check logs a marker there, so each plan in the server's log is attributed to its step.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.auth.accounts import TenantRecord, UserRecord
from services.auth.api_keys import NewApiKeyRow
from services.auth.invitations import NewInvitation
from services.auth.store import PostgresAuthStore, _RefreshSession
from services.auth.team_store import PostgresTeamStore, _AcceptSession, _MembershipChange
from services.common.api_keys import ApiKeyVerifier, generate_api_key
from services.common.db import Database, open_pool
from services.common.errors import Unauthenticated
from services.common.paging import Cursor
from services.common.ratelimit import PostgresPlanSource
from services.common.revocations import PostgresRevocations
from services.lattice.engine.shapes import Shape
from services.lattice.fields import EncodedField
from services.lattice.outbox_store import PostgresOutbox
from services.lattice.records import NewLattice, OutboxEvent
from services.lattice.store import PostgresLatticeStore, _PostgresTransaction
from services.webhook.delivery_store import PostgresDeliveryStore
from services.webhook.endpoints import NewWebhook, new_secret
from services.webhook.events import NewEvent, disabled_event
from services.webhook.policy import AttemptResult, AttemptStatus, Outcome
from services.webhook.queue_store import PostgresDeliveryQueue
from services.webhook.retention_store import PostgresRetention
from services.webhook.secret_box import SecretBox
from services.webhook.store import PostgresWebhookStore
from services.webhook.worker import Attempted

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"
# Every class whose methods send SQL on the services' behalf. A module-level `class Postgres*`
# under services/ that is missing here fails test_query_plans (see `unlisted_stores`).
STORES: tuple[type, ...] = (
    PostgresLatticeStore,
    _PostgresTransaction,
    PostgresOutbox,
    PostgresWebhookStore,
    PostgresDeliveryStore,
    PostgresDeliveryQueue,
    PostgresRetention,
    PostgresAuthStore,
    _RefreshSession,
    PostgresTeamStore,
    _MembershipChange,
    _AcceptSession,
    ApiKeyVerifier,
    PostgresRevocations,
    PostgresPlanSource,
)
# The tenant whose rows the steps read: any seeded tenant is like any other; this one has an
# outbox event waiting (every tenth does) and a webhook delivery due.
TENANT = 500
DAY_S = 86400.0


def seeded_id(*parts: object) -> str:
    """The id loadtest/sql/seed.sql derives for ('t', 500), ('l', 500, '.', 7)...: md5::uuid."""
    return str(uuid.UUID(hashlib.md5("".join(map(str, parts)).encode()).hexdigest()))  # noqa: S324


def _field() -> EncodedField:
    return EncodedField(checksum="0" * 32, encoding="raw", data=bytes(4000), blocked_count=0)


@dataclass
class Workload:
    """The stores on one Database, and a box for the webhook secrets they seal and open."""

    db: Database
    box: SecretBox
    # Run again and again on the same data (loadtest/rls.py): what runs out is skipped.
    repeated: bool = False

    async def run(
        self,
        on_step_end: Callable[[str], Awaitable[None]],
        *,
        only: Iterable[str] | None = None,
    ) -> list[str]:
        """Runs every step in order (or those named in `only`); the methods covered."""
        wanted = set(only) if only is not None else None
        covered: list[str] = []
        for step in STEPS:
            if wanted is not None and step.name not in wanted:
                continue
            await getattr(self, step.method)()
            await on_step_end(step.name)
            covered += step.covers
        return covered

    # ------------------------------------------------------------------ lattice
    @property
    def tenant(self) -> str:
        return seeded_id("t", TENANT)

    @property
    def lattice(self) -> str:
        return seeded_id("l", TENANT, ".", 50)

    async def create_lattice(self) -> None:
        store = PostgresLatticeStore(self.db)
        lattice_id = str(uuid.uuid4())
        async with store.transaction(self.tenant) as tx:
            await tx.lock_tenant()
            await tx.count_lattices()
            await tx.insert(NewLattice(lattice_id, "hot path", Shape(3, 10)), _field())
            await tx.add_event(
                OutboxEvent(str(uuid.uuid4()), "lattice.created", {"id": lattice_id})
            )
        self._created_lattice = lattice_id

    async def get_lattice(self) -> None:
        assert await PostgresLatticeStore(self.db).get(self.tenant, self.lattice) is not None

    async def get_with_field(self) -> None:
        found = await PostgresLatticeStore(self.db).get_with_field(self.tenant, self.lattice)
        assert found is not None

    async def list_lattices(self) -> None:
        store = PostgresLatticeStore(self.db)
        first = await store.list_lattices(self.tenant, limit=20, after=None)
        last = first[-1]
        await store.list_lattices(
            self.tenant, limit=20, after=Cursor(created_at=last.created_at, id=last.id)
        )

    async def transform(self) -> None:
        store = PostgresLatticeStore(self.db)
        async with store.transaction(self.tenant, lock_timeout_s=1.0) as tx:
            assert await tx.lock_lattice(self.lattice) is not None
            assert await tx.read_field(self.lattice) is not None
            await tx.save_field(self.lattice, _field())

    async def path_event(self) -> None:
        event = OutboxEvent(str(uuid.uuid4()), "path.computed", {"id": self.lattice})
        await PostgresLatticeStore(self.db).add_event(self.tenant, event)

    async def delete_lattice(self) -> None:
        async with PostgresLatticeStore(self.db).transaction(self.tenant) as tx:
            assert await tx.delete(self._created_lattice) is not None

    async def relay(self) -> None:
        outbox = PostgresOutbox(self.db)
        await outbox.due_tenants(100)
        await outbox.backlog()
        claimed = await outbox.claim(self.tenant, 10, 30.0)
        ids = [event.id for event in claimed]
        await outbox.delivered(self.tenant, ids[:1])
        await outbox.retry_later(self.tenant, ids[1:], 5.0, error="hot path", count_attempt=True)

    # ------------------------------------------------------------------ auth
    async def register(self) -> None:
        tenant_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
        await PostgresAuthStore(self.db).create_tenant_with_owner(
            TenantRecord(tenant_id, "hot path", "free"),
            UserRecord(
                user_id, f"hot-{user_id}@example.com", tenant_id, "owner", datetime.now(UTC), "x"
            ),
        )

    @property
    def user(self) -> str:
        return seeded_id("u", TENANT, ".", 1)

    async def log_in(self) -> None:
        store = PostgresAuthStore(self.db)
        found = await store.find_user_by_email(f"user1.t{TENANT}@seed.example")
        assert found is not None
        assert await store.memberships_of(found.email)
        await store.update_password_hash(self.tenant, self.user, found.password_hash)
        await store.save_refresh_token(
            tenant_id=self.tenant,
            user_id=self.user,
            family_id=str(uuid.uuid4()),
            token_hash=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
            expires_at=datetime.now(UTC) + timedelta(days=30),
        )

    async def current_user(self) -> None:
        assert await PostgresAuthStore(self.db).get_user(self.tenant, self.user) is not None

    @staticmethod
    def _refresh_hash(number: int) -> str:
        return hashlib.sha256(f"r{TENANT}.1.{number}".encode()).hexdigest()

    async def refresh(self) -> None:
        store = PostgresAuthStore(self.db)
        async with store.refresh_session(self._refresh_hash(2)) as session:
            assert session.token is not None
            await session.owner()
            await session.replace(hashlib.sha256(uuid.uuid4().bytes).hexdigest())
        async with store.refresh_session(self._refresh_hash(1)) as spent:
            await spent.revoke_family()  # what a reused, spent token does

    async def log_out(self) -> None:
        store = PostgresAuthStore(self.db)
        await store.revoke_refresh_family(self.tenant, self.user, self._refresh_hash(4))
        expires = (datetime.now(UTC) + timedelta(minutes=10)).timestamp()
        await PostgresRevocations(self.db).record(self.tenant, str(uuid.uuid4()), expires)

    async def rebuild(self) -> None:
        await PostgresRevocations(self.db).unexpired(120.0)

    async def api_keys(self) -> None:
        store = PostgresAuthStore(self.db)
        new = generate_api_key()
        key_id = str(uuid.uuid4())
        row = NewApiKeyRow(key_id, self.tenant, self.user, "hot path", new.prefix, new.secret_hash)
        # No cap worth the name: without row-level security (loadtest/rls.py) the count the
        # cap is checked against is every tenant's keys.
        assert await store.insert_api_key(row, max_live=10**9) is not None
        await store.list_api_keys(self.tenant)
        await ApiKeyVerifier(self.db).verify(new.key)
        async with store.revoking_api_key(self.tenant, key_id) as revoked:
            assert revoked
        # A seeded key, whose secret nobody knows: found by its prefix, then refused.
        seeded_prefix = hashlib.md5(f"k{TENANT}.2".encode()).hexdigest()[:12]  # noqa: S324
        seeded_prefix = seeded_prefix.translate(str.maketrans("0189", "wxyz"))
        with suppress(Unauthenticated):
            await ApiKeyVerifier(self.db).verify(new.key.replace(new.prefix, seeded_prefix, 1))

    def _team(self) -> PostgresTeamStore:
        return PostgresTeamStore(self.db, PostgresAuthStore(self.db))

    async def my_tenants(self) -> None:
        assert await self._team().tenants_of(f"user1.t{TENANT}@seed.example")

    async def invitations(self) -> None:
        """Invite twice (the second replaces the first), accept as a new and as an existing
        account, list, revoke; what it makes is removed again by `members`."""
        team = self._team()
        token_hashes = []
        for role in ("member", "member", "admin"):
            token_hash = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
            token_hashes.append(token_hash)
            row = NewInvitation(
                id=str(uuid.uuid4()),
                tenant_id=self.tenant,
                email=f"hot-{uuid.uuid4().hex}@example.com",
                role=role,
                invited_by=self.user,
                expires_at=datetime.now(UTC) + timedelta(days=7),
                token_hash=token_hash,
            )
            assert await team.insert_invitation(row, max_pending=10**9) is not None
        await team.list_invitations(self.tenant)
        assert await team.find_invitation(token_hashes[0]) is not None
        new_user = str(uuid.uuid4())
        async with team.accepting_invitation(token_hashes[0]) as session:
            invitation = session.invitation
            assert invitation is not None
            await session.is_member(new_user)
            await session.join_new(
                UserRecord(new_user, invitation.email, "", "", datetime.now(UTC), "x")
            )
            await session.tenant()
        # Another tenant's user joins this one.
        outsider = seeded_id("u", TENANT + 1, ".", 1)
        async with team.accepting_invitation(token_hashes[1]) as session:
            await session.join(outsider, f"user1.t{TENANT + 1}@seed.example")
        pending = await team.list_invitations(self.tenant)
        assert await team.revoke_invitation(self.tenant, pending[0].id)
        self._joined = (new_user, outsider)

    async def members(self) -> None:
        team = self._team()
        await team.list_members(self.tenant)
        for user in self._joined:
            async with team.changing_member(self.tenant, user) as change:
                assert change.member is not None
                assert change.owners >= 1
                await change.set_role("admin")
            async with team.changing_member(self.tenant, user) as change:
                await change.remove()

    async def plan_of(self) -> None:
        assert await PostgresPlanSource(self.db).plan_of(self.tenant) is not None

    # ------------------------------------------------------------------ webhook
    @property
    def webhook(self) -> str:
        return seeded_id("w", TENANT, ".", 1)

    async def endpoints(self) -> None:
        store = PostgresWebhookStore(self.db, self.box)
        webhook_id = str(uuid.uuid4())
        await store.insert(
            self.tenant,
            NewWebhook(webhook_id, "https://hooks.example.com/hot", ("*",), "", new_secret()),
        )
        await store.get(self.tenant, self.webhook)
        await store.list_webhooks(self.tenant, limit=20, after=None)
        await store.rotate_secret(self.tenant, webhook_id, new_secret(), 86400.0)
        await store.enable(self.tenant, self.webhook)
        await store.delete(self.tenant, webhook_id)
        assert await store.subscribed_types(self.tenant)

    def _event(self, event_type: str = "lattice.created") -> NewEvent:
        return NewEvent(id=f"evt_hot_{uuid.uuid4().hex}", type=event_type, body=b"{}")

    async def publish(self) -> None:
        store = PostgresDeliveryStore(self.db, self.box)
        published = await store.publish(self.tenant, self._event(), 0.0)
        assert published.queued >= 1

    async def test_and_resend(self) -> None:
        store = PostgresDeliveryStore(self.db, self.box)
        await store.queue_to_endpoint(self.tenant, self.webhook, 0.0, event=self._event())
        delivery = seeded_id("d", TENANT, ".", 7, ".", 1)
        await store.queue_to_endpoint(self.tenant, self.webhook, 0.0, delivery_id=delivery)

    async def list_deliveries(self) -> None:
        store = PostgresDeliveryStore(self.db, self.box)
        first = await store.list_log(self.tenant, self.webhook, limit=20, after=None)
        assert first
        last = first[-1]
        await store.list_log(
            self.tenant,
            self.webhook,
            limit=20,
            after=Cursor(created_at=last.created_at, id=last.log_id),
        )

    async def worker(self) -> None:
        queue = PostgresDeliveryQueue(self.db, self.box)
        await queue.stats()
        jobs = await queue.claim(8, 30.0)
        # The seed has 400 deliveries due; repeated runs (loadtest/rls.py) use them up.
        assert len(jobs) >= 6 or self.repeated, f"claimed {len(jobs)} of 8 due deliveries"
        if len(jobs) < 6:
            return
        await queue.renew([job.claim for job in jobs], 30.0)
        await queue.release([jobs[5].claim])
        await queue.pause(jobs[0].claim)
        await queue.defer(jobs[1].claim, 5.0)
        now = datetime.now(UTC)
        ok = Outcome(AttemptStatus.SUCCEEDED)
        failed = Outcome(AttemptStatus.FAILED, retry_in_s=10.0)
        gone = Outcome(AttemptStatus.DEAD, disable_reason="gone", disable_kind="gone")
        for job, outcome in ((jobs[2], ok), (jobs[3], failed), (jobs[4], gone)):
            disabled = (
                disabled_event(job.webhook_id, job.url, "gone", now)
                if outcome.disable_reason
                else None
            )
            await queue.record(
                job.claim.tenant_id,
                [Attempted(job, _result(outcome), outcome, now, disabled)],
                0.0,
            )

    async def retention(self) -> None:
        retention = PostgresRetention(self.db)
        old = await retention.old_events(20 * DAY_S, after=None, limit=50)
        assert old
        await retention.old_events(20 * DAY_S, after=old[-1], limit=50)
        mine = [event.id for event in old if event.tenant_id == old[0].tenant_id]
        await retention.prune(old[0].tenant_id, mine, 20 * DAY_S)


@dataclass(frozen=True)
class Step:
    """A named piece of work: the Workload method that does it, the store methods it calls."""

    name: str
    method: str
    covers: tuple[str, ...]


STEPS: tuple[Step, ...] = (
    Step(
        "lattice: create",
        "create_lattice",
        (
            "PostgresLatticeStore.transaction",
            "_PostgresTransaction.lock_tenant",
            "_PostgresTransaction.count_lattices",
            "_PostgresTransaction.insert",
            "_PostgresTransaction.add_event",
        ),
    ),
    Step("lattice: get", "get_lattice", ("PostgresLatticeStore.get",)),
    Step("lattice: get with field", "get_with_field", ("PostgresLatticeStore.get_with_field",)),
    Step("lattice: list, two pages", "list_lattices", ("PostgresLatticeStore.list_lattices",)),
    Step(
        "lattice: transform",
        "transform",
        (
            "_PostgresTransaction.lock_lattice",
            "_PostgresTransaction.read_field",
            "_PostgresTransaction.save_field",
        ),
    ),
    Step("lattice: event after a path", "path_event", ("PostgresLatticeStore.add_event",)),
    Step("lattice: delete", "delete_lattice", ("_PostgresTransaction.delete",)),
    Step(
        "outbox: relay",
        "relay",
        (
            "PostgresOutbox.due_tenants",
            "PostgresOutbox.backlog",
            "PostgresOutbox.claim",
            "PostgresOutbox.delivered",
            "PostgresOutbox.retry_later",
        ),
    ),
    Step("auth: register", "register", ("PostgresAuthStore.create_tenant_with_owner",)),
    Step(
        "auth: log in",
        "log_in",
        (
            "PostgresAuthStore.find_user_by_email",
            "PostgresAuthStore.memberships_of",
            "PostgresAuthStore.update_password_hash",
            "PostgresAuthStore.save_refresh_token",
        ),
    ),
    Step("auth: current user", "current_user", ("PostgresAuthStore.get_user",)),
    Step(
        "auth: refresh",
        "refresh",
        (
            "PostgresAuthStore.refresh_session",
            "_RefreshSession.owner",
            "_RefreshSession.replace",
            "_RefreshSession.revoke_family",
            "_RefreshSession.token",
        ),
    ),
    Step(
        "auth: log out",
        "log_out",
        (
            "PostgresAuthStore.revoke_refresh_family",
            "PostgresRevocations.record",
            "PostgresRevocations.purge_expired",
        ),
    ),
    Step("auth: denylist rebuild", "rebuild", ("PostgresRevocations.unexpired",)),
    Step(
        "auth: api keys",
        "api_keys",
        (
            "PostgresAuthStore.insert_api_key",
            "PostgresAuthStore.list_api_keys",
            "ApiKeyVerifier.verify",
            "PostgresAuthStore.revoking_api_key",
        ),
    ),
    Step(
        "team: my tenants",
        "my_tenants",
        ("PostgresTeamStore.tenants_of", "PostgresAuthStore.tenants_of"),
    ),
    Step(
        "team: invitations",
        "invitations",
        (
            "PostgresTeamStore.insert_invitation",
            "PostgresTeamStore.list_invitations",
            "PostgresTeamStore.find_invitation",
            "PostgresTeamStore.accepting_invitation",
            "PostgresTeamStore.revoke_invitation",
            "_AcceptSession.invitation",
            "_AcceptSession.is_member",
            "_AcceptSession.join_new",
            "_AcceptSession.join",
            "_AcceptSession.tenant",
        ),
    ),
    Step(
        "team: members",
        "members",
        (
            "PostgresTeamStore.list_members",
            "PostgresTeamStore.changing_member",
            "_MembershipChange.member",
            "_MembershipChange.owners",
            "_MembershipChange.set_role",
            "_MembershipChange.remove",
        ),
    ),
    Step("plans: tenant plan", "plan_of", ("PostgresPlanSource.plan_of",)),
    Step(
        "webhook: endpoints",
        "endpoints",
        (
            "PostgresWebhookStore.insert",
            "PostgresWebhookStore.get",
            "PostgresWebhookStore.list_webhooks",
            "PostgresWebhookStore.rotate_secret",
            "PostgresWebhookStore.enable",
            "PostgresWebhookStore.delete",
            "PostgresWebhookStore.subscribed_types",
        ),
    ),
    Step("webhook: publish", "publish", ("PostgresDeliveryStore.publish",)),
    Step(
        "webhook: test and resend", "test_and_resend", ("PostgresDeliveryStore.queue_to_endpoint",)
    ),
    Step("webhook: deliveries, two pages", "list_deliveries", ("PostgresDeliveryStore.list_log",)),
    Step(
        "webhook: worker",
        "worker",
        (
            "PostgresDeliveryQueue.claim",
            "PostgresDeliveryQueue.renew",
            "PostgresDeliveryQueue.release",
            "PostgresDeliveryQueue.stats",
            "PostgresDeliveryQueue.pause",
            "PostgresDeliveryQueue.defer",
            "PostgresDeliveryQueue.record",
        ),
    ),
    Step(
        "webhook: retention",
        "retention",
        (
            "PostgresRetention.old_events",
            "PostgresRetention.prune",
        ),
    ),
)


def _result(outcome: Outcome) -> AttemptResult:
    if outcome.status is AttemptStatus.SUCCEEDED:
        return AttemptResult(200, "", duration_s=0.01)
    return AttemptResult(503 if outcome.status is AttemptStatus.FAILED else 410, "refused")


def public_methods(cls: type) -> set[str]:
    """`Class.method` for each public method and property the class defines itself."""
    return {
        f"{cls.__name__}.{name}"
        for name, member in vars(cls).items()
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    }


def uncovered(covered: Iterable[str]) -> set[str]:
    """Public store methods no step calls."""
    every = set().union(*(public_methods(cls) for cls in STORES))
    return every - set(covered)


def unlisted_stores() -> set[str]:
    """Module-level `class Postgres*` under services/ that STORES does not list."""
    listed = {cls.__name__ for cls in STORES}
    found = set()
    for path in SERVICES_DIR.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.startswith("Postgres"):
                found.add(node.name)
    return found - listed


@asynccontextmanager
async def workload(
    url: str, box: SecretBox, *, name: str = "hot-paths", repeated: bool = False
) -> AsyncIterator[Workload]:
    """A Workload on a small pool at `url` (the services' role, or another to compare)."""
    pool = await open_pool(url, min_size=1, max_size=4, name=name)
    try:
        yield Workload(Database(pool), box, repeated)
    finally:
        await pool.close()
