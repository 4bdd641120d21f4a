"""The audit trail: security-relevant actions appended to their tenant's hash chain.

Every service records through `record` (async, inside the transaction that makes the change,
so the change and its event commit or vanish together) or `record_sync` (the operator CLIs).
The actor and the origin (client address, user agent, request id) come from the current RPC
unless given; the chain itself is audit_chain.py, the table migrations/0014_audit_trail.sql.
Action names and what each records: docs/operations/audit.md.
"""

from __future__ import annotations

import functools
import getpass
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client import Counter
from psycopg import AsyncConnection, Connection
from psycopg.types.json import Jsonb

from services.common import context as rpc_context
from services.common.audit_chain import chain_hash
from services.common.client_address import (
    TrustedProxies,
    forwarded_for_values,
    trusted_proxies_from_env,
)
from services.common.config import ADMIN_DATABASE_UNSET, ConfigError, admin_database_url

if TYPE_CHECKING:
    from services.common.db import Database

# Events no tenant owns (an unknown e-mail's log-in, key rotations, operator commands naming
# no tenant) form the platform chain, under the nil UUID, which no tenant has.
PLATFORM_TENANT = "00000000-0000-0000-0000-000000000000"
SUCCESS = "success"
FAILURE = "failure"
USER_AGENT_LIMIT = 512
# Who the operator CLIs record as the actor: AUDIT_ACTOR (e.g. set by a wrapper to the
# operator's SSO name), else the OS account running the command.
ACTOR_VARIABLE = "AUDIT_ACTOR"

AUDIT_EVENTS = Counter(
    "catalytic_audit_events_total",
    "Audit events recorded, by action and outcome (bursts of failed log-ins or key revocations"
    " alert).",
    ["action", "outcome"],
)

Detail = str | int | bool


@dataclass(frozen=True)
class Actor:
    """Who acted: a user (id), an API key (its public prefix), an operator (admin: their name),
    the platform itself (system: the component), or nobody known (anonymous: e.g. a log-in
    for an e-mail, with the e-mail's domain in the event's details, never the address)."""

    type: str
    id: str

    @classmethod
    def system(cls, component: str) -> Actor:
        return cls("system", component)

    @classmethod
    def admin(cls) -> Actor:
        """The operator running a CLI command."""
        name = os.environ.get(ACTOR_VARIABLE, "").strip()
        if not name:
            try:
                name = getpass.getuser()
            except (KeyError, OSError):
                name = f"uid {os.getuid()}"
        return cls("admin", name[:320])


@dataclass(frozen=True)
class Origin:
    """Where the request came from, as the gateway saw it."""

    client_address: str = ""
    user_agent: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class AuditEvent:
    """One action on one target. `reason` is a short class for failures (`bad_credentials`),
    `details` a few plain values (never a secret, password, token or whole key)."""

    action: str
    target_type: str
    target_id: str
    outcome: str = SUCCESS
    reason: str = ""
    details: Mapping[str, Detail] = field(default_factory=dict)


@functools.cache
def _trusted_proxies() -> TrustedProxies:
    try:
        return trusted_proxies_from_env()
    except ConfigError:
        # The services validate TRUSTED_PROXY_CIDRS at start-up; here, fall back to loopback.
        return TrustedProxies(())


def current_actor() -> Actor:
    """The current RPC's caller: the user, or the API key it used; anonymous without one."""
    principal = rpc_context.optional_principal()
    if principal is None:
        return Actor("anonymous", "")
    if principal.auth_method == rpc_context.AUTH_METHOD_API_KEY:
        return Actor("api_key", principal.api_key_prefix or principal.api_key_id)
    return Actor("user", principal.user_id)


def current_origin() -> Origin:
    """The current RPC's client address (through trusted proxies), user agent and request id;
    empty outside an RPC (a worker, a CLI)."""
    call = rpc_context.call.get()
    request_id = rpc_context.request_id.get() or ""
    if call is None:
        return Origin(request_id=request_id)
    metadata = list(call.invocation_metadata() or ())
    agent = next((value for key, value in metadata if key == "user-agent"), "")
    client = _trusted_proxies().client(call.peer() or "", forwarded_for_values(metadata))
    return Origin(
        client_address="" if client.ip is None else str(client.ip),
        user_agent=str(agent)[:USER_AGENT_LIMIT],
        request_id=request_id,
    )


# Two round trips per event. The first creates the chain's head if it is new and locks it
# either way (ON CONFLICT DO UPDATE locks the existing row and returns it): the tenant's appends
# queue here until this transaction ends. The second inserts the event and advances the head.
_LOCK_HEAD = (
    "INSERT INTO audit_chain_heads (tenant_id) VALUES (%s)"
    " ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_chain_heads.seq RETURNING seq, hash"
)
_APPEND = (
    "WITH appended AS (INSERT INTO audit_events (tenant_id, seq, id, occurred_at, actor_type,"
    " actor_id, action, target_type, target_id, outcome, reason, client_address, user_agent,"
    " request_id, details, prev_hash, hash) VALUES (%(tenant_id)s, %(seq)s, %(id)s,"
    " %(occurred_at)s, %(actor_type)s, %(actor_id)s, %(action)s, %(target_type)s,"
    " %(target_id)s, %(outcome)s, %(reason)s, %(client_address)s, %(user_agent)s,"
    " %(request_id)s, %(details)s, %(prev_hash)s, %(hash)s) RETURNING tenant_id, seq, hash)"
    " UPDATE audit_chain_heads SET seq = appended.seq, hash = appended.hash, updated_at = now()"
    " FROM appended WHERE audit_chain_heads.tenant_id = appended.tenant_id"
)


def _row(
    tenant_id: str, event: AuditEvent, actor: Actor, origin: Origin, seq: int, prev_hash: bytes
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant_id": tenant_id,
        "seq": seq,
        "id": str(uuid.uuid4()),
        # Microseconds, as PostgreSQL keeps them: the hash is computed before the row is stored.
        "occurred_at": datetime.now(UTC),
        "actor_type": actor.type,
        "actor_id": actor.id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "outcome": event.outcome,
        "reason": event.reason,
        "client_address": origin.client_address,
        "user_agent": origin.user_agent,
        "request_id": origin.request_id,
        "details": dict(event.details),
        "prev_hash": bytes(prev_hash),
    }
    row["hash"] = chain_hash(prev_hash, row)
    return row


def _params(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "details": Jsonb(row["details"])}


async def record(
    conn: AsyncConnection[Any],
    tenant_id: str,
    event: AuditEvent,
    *,
    actor: Actor | None = None,
    origin: Origin | None = None,
) -> None:
    """Appends `event` to `tenant_id`'s chain in `conn`'s transaction, which must have
    app.tenant_id set to `tenant_id`. Locks the chain's head until the transaction ends:
    record last, just before commit, to hold it briefly."""
    cur = await conn.execute(_LOCK_HEAD, (tenant_id,))
    head = await cur.fetchone()
    seq, prev_hash = _head(head)
    row = _row(
        tenant_id,
        event,
        actor or current_actor(),
        origin or current_origin(),
        seq + 1,
        prev_hash,
    )
    await conn.execute(_APPEND, _params(row))
    AUDIT_EVENTS.labels(event.action, event.outcome).inc()


def record_sync(
    conn: Connection[Any],
    tenant_id: str,
    event: AuditEvent,
    *,
    actor: Actor | None = None,
    origin: Origin | None = None,
) -> None:
    """`record` for the operator CLIs' blocking connections (actor: the operator)."""
    head = conn.execute(_LOCK_HEAD, (tenant_id,)).fetchone()
    seq, prev_hash = _head(head)
    row = _row(tenant_id, event, actor or Actor.admin(), origin or Origin(), seq + 1, prev_hash)
    conn.execute(_APPEND, _params(row))
    AUDIT_EVENTS.labels(event.action, event.outcome).inc()


def record_alone(conn: Connection[Any], tenant_id: str, event: AuditEvent) -> None:
    """`record_sync` in a transaction of its own on `conn`, with app.tenant_id set for it."""
    with conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        record_sync(conn, tenant_id, event)


def record_command(
    tenant_id: str, event: AuditEvent, environ: Mapping[str, str] | None = None
) -> str:
    """An operator command's event, recorded on a connection of its own as DATABASE_ADMIN_URL
    (else DATABASE_URL); "" when recorded, else the warning to print. A command that works
    without the database (a key rotated while PostgreSQL is down) must not fail for it."""
    url = admin_database_url(environ)
    if not url:
        return f"warning: {event.action} not recorded in the audit trail: {ADMIN_DATABASE_UNSET}"
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            record_alone(conn, tenant_id, event)
    except psycopg.Error as exc:
        return f"warning: {event.action} not recorded in the audit trail: {type(exc).__name__}"
    return ""


class AuditTrail:
    """Records an event that changes nothing else (a log-in, a refused one, a log-out) in a
    transaction of its own; a change records its event in its own transaction with `record`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self, tenant_id: str, event: AuditEvent, *, actor: Actor | None = None
    ) -> None:
        async with self._db.tenant_transaction(tenant_id) as conn:
            await record(conn, tenant_id, event, actor=actor)


def _head(head: Any) -> tuple[int, bytes]:
    if head is None:
        # The upsert returns the head whether it inserted or locked it: only row-level security
        # can hide it, when app.tenant_id is not this tenant.
        raise RuntimeError("the audit chain's head is not visible: is app.tenant_id set?")
    if isinstance(head, Mapping):
        return int(head["seq"]), bytes(head["hash"])
    return int(head[0]), bytes(head[1])
