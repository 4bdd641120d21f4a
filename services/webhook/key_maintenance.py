"""The key operations behind the admin command line (ADR 56), on one PostgreSQL connection.

Finding the endpoints is the one cross-tenant read: `app.lookup_webhook_keys = 'on'` matches the
read-only webhooks_key_maintenance_read policy of migration 0010, and only tenant ids are read
there. Every endpoint is then read and written in its own tenant's transaction (row-level
security is FORCED), locked FOR UPDATE, so a rotation through the API at the same moment either
waits or is waited for and is never overwritten with an older value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import DictRow

from services.common import audit
from services.common.keys.base import KekError
from services.common.keys.envelope import SealedFormatError, kek_id_of
from services.webhook.endpoints import new_secret
from services.webhook.secret_box import SecretBox

Connection = psycopg.Connection[DictRow]

# What a tenant does after a key-loss rotation, and the reason on each endpoint it disables.
ROTATE_ACTION = (
    "rotate this endpoint's secret (POST /v1/webhooks/{id}/rotate-secret) and install the new one"
)
KEY_LOSS_REASON = (
    f"signing secret replaced after a key incident: {ROTATE_ACTION}, then enable the endpoint"
    " (POST /v1/webhooks/{id}/enable)"
)

_ROWS = """
SELECT id::text AS id, url, enabled, secret, secret_sealed, previous_secret,
       previous_secret_sealed
FROM webhooks ORDER BY id
"""
_SET_SECRETS = """
UPDATE webhooks SET secret = %(secret)s, secret_sealed = %(secret_sealed)s,
  previous_secret = %(previous_secret)s, previous_secret_sealed = %(previous_secret_sealed)s
WHERE id = %(id)s
"""
# A key-loss rotation: one new secret, nothing kept from before (it cannot be opened, or it
# leaked); optionally disabled with its waiting deliveries paused, as the worker disables.
_KEY_LOSS_UPDATE = """
UPDATE webhooks SET secret = NULL, secret_sealed = %(sealed)s, previous_secret = NULL,
  previous_secret_sealed = NULL, previous_secret_expires_at = NULL,
  enabled = enabled AND NOT %(disable)s,
  disabled_reason = CASE WHEN %(disable)s THEN %(reason)s ELSE disabled_reason END
WHERE id = %(id)s
"""
_PAUSE_DELIVERIES = """
UPDATE webhook_deliveries SET paused = true, updated_at = now()
WHERE webhook_id = %s AND status = 'PENDING' AND NOT paused
"""
_COLUMNS = ("secret", "previous_secret")


class NotOwner(Exception):
    """Connected as a role that the cross-tenant read policy does not apply to."""


def check_owner(conn: Connection) -> None:
    """NotOwner unless connected as the owner of the webhooks table (the role that applied the
    migrations), the only role webhooks_key_maintenance_read lets find every tenant's endpoints;
    as any other, every command would silently find none."""
    row = conn.execute(
        "SELECT pg_has_role(current_user, tableowner, 'USAGE') AS owner, current_user AS role"
        " FROM pg_tables WHERE schemaname = 'public' AND tablename = 'webhooks'"
    ).fetchone()
    if row is None or not row["owner"]:
        role = row["role"] if row else "?"
        raise NotOwner(
            f"connected as {role}, which does not own the webhooks table: use the owner's URL"
            " (DATABASE_ADMIN_URL)"
        )


def tenants_with_endpoints(conn: Connection) -> list[str]:
    """Every tenant that has at least one endpoint, in id order (as the tables' owner)."""
    with conn.transaction():
        conn.execute("SELECT set_config('app.lookup_webhook_keys', 'on', true)")
        rows = conn.execute(
            "SELECT DISTINCT tenant_id::text AS tenant_id FROM webhooks ORDER BY 1"
        ).fetchall()
    return [row["tenant_id"] for row in rows]


@contextmanager
def tenant_transaction(conn: Connection, tenant_id: str) -> Iterator[Connection]:
    """A transaction that row-level security restricts to the tenant, as the services use."""
    with conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        yield conn


def _rows(conn: Connection, *, lock: bool) -> list[dict[str, Any]]:
    return conn.execute(_ROWS + (" FOR UPDATE" if lock else "")).fetchall()


@dataclass
class KeyStatus:
    """Where the secrets are: sealed under which KEK, or still in plaintext."""

    endpoints: int = 0
    plaintext: int = 0
    # KEK id -> sealed secrets (current and previous) under it.
    sealed: Counter[str] = field(default_factory=Counter)
    # Sealed values whose bytes are not a sealed value at all.
    malformed: int = 0


def key_status(conn: Connection) -> KeyStatus:
    """Counts every endpoint's secrets by form and KEK; opens nothing."""
    status = KeyStatus()
    for tenant_id in tenants_with_endpoints(conn):
        with tenant_transaction(conn, tenant_id):
            rows = _rows(conn, lock=False)
        status.endpoints += len(rows)
        for row in rows:
            for column in _COLUMNS:
                if row[column] is not None:
                    status.plaintext += 1
                sealed = row[f"{column}_sealed"]
                if sealed is not None:
                    try:
                        status.sealed[kek_id_of(bytes(sealed))] += 1
                    except SealedFormatError:
                        status.malformed += 1
    return status


@dataclass
class Pass:
    """What one pass over every endpoint did."""

    changed: int = 0
    unchanged: int = 0
    # "tenant/endpoint column: why" for each secret that could not be handled.
    failures: list[str] = field(default_factory=list)


Rewrite = Callable[[str, dict[str, Any]], dict[str, Any] | None]


def _each_endpoint(conn: Connection, rewrite: Rewrite) -> Pass:
    """Runs `rewrite(tenant_id, row)` on every endpoint under its lock; a dict it returns is
    written (every secret column), None leaves the row alone."""
    result = Pass()
    for tenant_id in tenants_with_endpoints(conn):
        with tenant_transaction(conn, tenant_id):
            for row in _rows(conn, lock=True):
                try:
                    values = rewrite(tenant_id, row)
                except KekError as exc:
                    result.failures.append(f"tenant {tenant_id} webhook {row['id']}: {exc}")
                    continue
                if values is None:
                    result.unchanged += 1
                    continue
                conn.execute(_SET_SECRETS, {"id": row["id"], **values})
                result.changed += 1
    return result


def _secrets(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "secret": row["secret"],
        "secret_sealed": row["secret_sealed"],
        "previous_secret": row["previous_secret"],
        "previous_secret_sealed": row["previous_secret_sealed"],
    }


def encrypt_secrets(conn: Connection, box: SecretBox) -> Pass:
    """Seals every plaintext secret under the current KEK and sets its plaintext to NULL."""

    def seal(tenant_id: str, row: dict[str, Any]) -> dict[str, Any] | None:
        values = _secrets(row)
        for column in _COLUMNS:
            plaintext = values[column]
            if plaintext is not None:
                # Plaintext next to a sealed value is the newer of the two (secret_box.py).
                values[f"{column}_sealed"] = box.seal(tenant_id, row["id"], plaintext)
                values[column] = None
        return values if values != _secrets(row) else None

    return _each_endpoint(conn, seal)


def decrypt_secrets(conn: Connection, box: SecretBox) -> Pass:
    """Writes every sealed secret back in plaintext and drops the sealed form: what the
    release before ADR 56 needs to sign, before rolling the webhook service back to it."""

    def unseal(tenant_id: str, row: dict[str, Any]) -> dict[str, Any] | None:
        values = _secrets(row)
        for column in _COLUMNS:
            sealed = values[f"{column}_sealed"]
            if sealed is not None:
                if values[column] is None:
                    values[column] = box.open(tenant_id, row["id"], bytes(sealed))
                values[f"{column}_sealed"] = None
        return values if values != _secrets(row) else None

    return _each_endpoint(conn, unseal)


def rewrap_secrets(conn: Connection, box: SecretBox) -> Pass:
    """Rewraps the data key of every sealed secret not under the current KEK (the secrets and
    their ciphertexts stay as they are). Safe to run again; a failed one is listed, not lost."""

    def rewrap(tenant_id: str, row: dict[str, Any]) -> dict[str, Any] | None:
        values = _secrets(row)
        for column in _COLUMNS:
            sealed = values[f"{column}_sealed"]
            if sealed is not None:
                values[f"{column}_sealed"] = box.rewrap(tenant_id, row["id"], bytes(sealed))
        return values if values != _secrets(row) else None

    return _each_endpoint(conn, rewrap)


@dataclass
class TenantNotice:
    """What to tell one tenant after its endpoints' secrets were replaced."""

    tenant_id: str
    tenant_name: str
    owner_emails: list[str]
    # (webhook id, url) of each endpoint whose secret was replaced.
    endpoints: list[tuple[str, str]]
    disabled: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "tenant_name": self.tenant_name,
            "owner_emails": self.owner_emails,
            "endpoints": [{"id": id_, "url": url} for id_, url in self.endpoints],
            "disabled": self.disabled,
            "action": KEY_LOSS_REASON if self.disabled else ROTATE_ACTION,
        }


def rotate_all_endpoint_secrets(
    conn: Connection, box: SecretBox, *, disable: bool
) -> list[TenantNotice]:
    """Gives every endpoint of every tenant a new secret, sealed under the current KEK, with
    no overlap: the old one cannot be opened (KEK lost) or must stop signing (leaked). No one
    learns the new secret; each tenant rotates its own through the API. With `disable`, each
    endpoint is disabled (its waiting deliveries paused, not lost) until the tenant has
    installed its new secret and enables it. One notice per tenant."""
    notices: list[TenantNotice] = []
    for tenant_id in tenants_with_endpoints(conn):
        with tenant_transaction(conn, tenant_id):
            tenant = conn.execute("SELECT name FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
            owners = conn.execute(
                # Its owners as members (ADR 63), wherever their accounts were created.
                "SELECT DISTINCT email FROM memberships WHERE role = 'owner' ORDER BY email"
            ).fetchall()
            endpoints = []
            for row in _rows(conn, lock=True):
                conn.execute(
                    _KEY_LOSS_UPDATE,
                    {
                        "id": row["id"],
                        "sealed": box.seal(tenant_id, row["id"], new_secret()),
                        "disable": disable,
                        "reason": KEY_LOSS_REASON,
                    },
                )
                if disable:
                    conn.execute(_PAUSE_DELIVERIES, (row["id"],))
                endpoints.append((row["id"], row["url"]))
            # The tenant sees on its own trail that an operator replaced its secrets.
            audit.record_sync(
                conn,
                tenant_id,
                audit.AuditEvent(
                    "webhook.secret_rotate_all",
                    "tenant",
                    tenant_id,
                    details={"endpoints": len(endpoints), "disabled": disable},
                ),
            )
        notices.append(
            TenantNotice(
                tenant_id=tenant_id,
                tenant_name=tenant["name"] if tenant else "",
                owner_emails=[owner["email"] for owner in owners],
                endpoints=endpoints,
                disabled=disable,
            )
        )
    return notices
