"""In-process webhook servers on a database of their own, for integration tests.

The shared stack's webhook service delivers whatever is queued in the stack's database, so a
test that needs other settings (no allow list, a short secret overlap, a tiny timeout) runs its
own server on a scratch copy of the migrated schema: nothing else claims its deliveries. Tokens
come from the stack's real auth service; its tenants are copied into the scratch database.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import io
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
from catalytic.webhook.v1 import webhook_service_pb2 as pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from jose import jwt
from psycopg import sql

from devstack import Stack
from services.common.keys.files import FileKekRing
from services.common.migrate import migrate
from services.common.server import RunningService
from services.webhook.config import WebhookConfig
from services.webhook.secret_box import SecretBox
from services.webhook.server import create_server
from services.webhook.ssrf import Resolver
from tests.e2e.helpers import Tenant

MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"
INTERNAL_TOKEN = "integration-internal-token-0123456789abcdef"
T = TypeVar("T")
# Quick enough for tests; each test overrides what it is about.
BASE_ENV = {
    "WEBHOOK_PORT": "0",
    "WEBHOOK_METRICS_PORT": "0",
    "WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
    "WEBHOOK_RETRY_SCHEDULE_S": "0,0.5,0.5,0.5",
    "WEBHOOK_RETRY_JITTER": "0",
    "WEBHOOK_POLL_INTERVAL_S": "0.1",
    "WEBHOOK_LEASE_S": "3",
    "WEBHOOK_TIMEOUT_S": "5",
    "RATE_LIMIT_MULTIPLIER": "100",
    "SHUTDOWN_GRACE_S": "1",
    "INTERNAL_TOKEN": INTERNAL_TOKEN,
    "LOG_LEVEL": "WARNING",
}


@functools.cache
def shared_kek_dir() -> Path:
    """A key directory with one KEK, shared by this process's in-process servers and stores."""
    directory = Path(tempfile.mkdtemp(prefix="catalytic-test-kek-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    FileKekRing(directory).create()
    return directory


def shared_box() -> SecretBox:
    """A SecretBox on shared_kek_dir(), for tests that build the stores themselves."""
    return SecretBox(FileKekRing(shared_kek_dir()))


def with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


@contextmanager
def migrated_template(stack: Stack) -> Iterator[str]:
    """The name of a new database holding every migration; dropped afterwards."""
    admin_url = stack.env["DATABASE_ADMIN_URL"]
    name = f"webhook_tmpl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate(with_database(admin_url, name), MIGRATIONS, out=io.StringIO())
        yield name
    finally:
        _drop(admin_url, name)


@dataclass(frozen=True)
class Scratch:
    """A throw-away copy of the template: its owner and app-role URLs."""

    admin_url: str
    app_url: str

    def add_tenant(self, tenant_id: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO tenants (id, name) VALUES (%s, 'scratch') ON CONFLICT DO NOTHING",
                (tenant_id,),
            )

    def add_member(self, tenant: Tenant) -> None:
        """The tenant, and its owner's membership (every service checks the caller's current
        role there, ADR 63): the token's user, as the stack's auth registered it."""
        self.add_tenant(tenant.tenant_id)
        add_membership(self.admin_url, tenant)

    def query(self, statement: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a statement run as the owner (no row-level security)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]


def add_membership(admin_url: str, tenant: Tenant, role: str = "owner") -> None:
    """A membership of the tenant for the user its access token names, in a scratch database
    that has the tenant but not the stack's users."""
    user_id = jwt.get_unverified_claims(tenant.access_token)["sub"]
    with psycopg.connect(admin_url, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant.tenant_id,))
        conn.execute(
            "INSERT INTO memberships (tenant_id, user_id, email, role) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (tenant.tenant_id, user_id, tenant.email, role),
        )


@contextmanager
def scratch_copy(stack: Stack, template: str) -> Iterator[Scratch]:
    admin_url = stack.env["DATABASE_ADMIN_URL"]
    name = f"webhook_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield Scratch(
            with_database(admin_url, name), with_database(stack.env["DATABASE_URL"], name)
        )
    finally:
        _drop(admin_url, name)


def _drop(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@dataclass
class Server:
    """A running in-process webhook service and a client for it."""

    running: RunningService
    stub: Any  # pb_grpc.WebhookServiceStub on an aio channel
    tenant: Tenant

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tenant.access_token}"),)

    async def create(self, url: str, *event_types: str, ordered: bool = False) -> Any:
        return await self.stub.CreateWebhook(
            pb.CreateWebhookRequest(
                url=url, event_types=list(event_types or ["*"]), ordered=ordered
            ),
            metadata=self.auth,
        )

    async def publish(
        self, event_type: str = "lattice.created", event_id: str | None = None, **data: Any
    ) -> int:
        struct = struct_pb2.Struct()
        struct.update(data)
        reply = await self.stub.PublishEvent(
            pb.PublishEventRequest(
                event_id=event_id or str(uuid.uuid4()),
                tenant_id=self.tenant.tenant_id,
                event_type=event_type,
                data=struct,
            ),
            metadata=(("x-internal-token", INTERNAL_TOKEN),),
        )
        queued: int = reply.queued_deliveries
        return queued

    async def log(self, webhook_id: str) -> list[Any]:
        reply = await self.stub.ListDeliveries(
            pb.ListDeliveriesRequest(id=webhook_id, page_size=100), metadata=self.auth
        )
        return list(reply.deliveries)

    async def wait_for_log(
        self, webhook_id: str, done: Callable[[list[Any]], bool], within: float = 15.0
    ) -> list[Any]:
        return await eventually(lambda: self.log(webhook_id), done, within)


async def eventually(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], within: float = 15.0
) -> T:
    """Reads until `done` holds; AssertionError with the last value after `within` s."""
    deadline = time.monotonic() + within
    while True:
        value = await read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not there after {within} s: {value}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def webhook_server(
    stack: Stack,
    scratch: Scratch,
    tenant: Tenant,
    *,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
    **env: str,
) -> AsyncIterator[Server]:
    """The service's own factory on `scratch`, verifying the stack's tokens, `env` over BASE_ENV."""
    scratch.add_member(tenant)
    config = WebhookConfig.from_env(
        {
            "DATABASE_URL": scratch.app_url,
            "REDIS_URL": stack.env["REDIS_URL"],
            "AUTH_ADDR": stack.addr("auth"),
            "KEK_DIR": str(shared_kek_dir()),
            **BASE_ENV,
            **env,
        }
    )
    running = await create_server(config, resolver=resolver, ssl_context=ssl_context)
    await running.set_serving()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Server(running, pb_grpc.WebhookServiceStub(channel), tenant)
    finally:
        await running.stop(config.service.shutdown_grace_s)
