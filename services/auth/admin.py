"""Operator command line: `python -m services.auth.admin {set-plan,show-tenant,*-key(s),*-audit}`.

The key commands reach the signing keys as the auth service does (JWT_KEY_PROVIDER: PEM files
or a PKCS#11 token). The others talk to PostgreSQL directly as DATABASE_ADMIN_URL (else
DATABASE_URL). Row-level security is FORCED, so it applies to the tables' owner too: each
command sets `app.tenant_id` for its own transaction, exactly as the services do, and can touch
only the tenant it names.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from services.auth import audit_commands
from services.auth.config import SigningKeyConfig, open_signing_keys
from services.auth.keys import generate_key
from services.auth.signing import SigningKeyError, SigningKeyRing
from services.common import audit
from services.common.config import (
    ADMIN_DATABASE_UNSET,
    ConfigError,
    admin_database_url,
    redact_url,
)
from services.common.plans import PLANS

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_ACCESS_TOKEN_TTL_S = 600


class CommandError(Exception):
    """A failure to report in one line and exit 1 (no such tenant, database unreachable)."""


def _tenant_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a tenant id (a UUID)") from None


def _database_url() -> str:
    url = admin_database_url()
    if not url:
        raise CommandError(ADMIN_DATABASE_UNSET)
    return url


def _connect() -> psycopg.Connection[TupleRow]:
    url = _database_url()
    try:
        return psycopg.connect(url, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise CommandError(f"cannot connect to PostgreSQL at {redact_url(url)}") from exc


def set_plan(tenant_id: str, plan: str) -> str:
    """Changes the tenant's plan; returns the line to print."""
    with _connect() as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        row = conn.execute(
            "SELECT plan FROM tenants WHERE id = %s FOR UPDATE", (tenant_id,)
        ).fetchone()
        if row is None:
            raise CommandError(f"no tenant with id {tenant_id}")
        old = str(row[0])
        if old == plan:
            return f"tenant {tenant_id}: plan is already {plan}; nothing changed"
        conn.execute("UPDATE tenants SET plan = %s WHERE id = %s", (plan, tenant_id))
        audit.record_sync(
            conn,
            tenant_id,
            audit.AuditEvent(
                "tenant.plan_change", "tenant", tenant_id, details={"from": old, "to": plan}
            ),
        )
    return f"tenant {tenant_id}: plan {old} -> {plan}"


def show_tenant(tenant_id: str) -> str:
    """The tenant's name, plan, creation time and counts of what it owns (its users: its
    members, wherever their accounts were created)."""
    with _connect() as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        row = conn.execute(
            "SELECT name, plan, created_at,"
            " (SELECT count(*) FROM memberships) AS users,"
            " (SELECT count(*) FROM lattices) AS lattices,"
            " (SELECT count(*) FROM webhooks) AS webhooks,"
            " (SELECT count(*) FROM api_keys WHERE revoked_at IS NULL) AS api_keys"
            " FROM tenants WHERE id = %s",
            (tenant_id,),
        ).fetchone()
        if row is not None:
            audit.record_sync(conn, tenant_id, audit.AuditEvent("tenant.show", "tenant", tenant_id))
    if row is None:
        raise CommandError(f"no tenant with id {tenant_id}")
    name, plan, created_at, users, lattices, webhooks, api_keys = row
    return "\n".join(
        (
            f"tenant      {tenant_id}",
            f"name        {name}",
            f"plan        {plan}",
            f"created_at  {created_at}",
            f"users       {users}",
            f"lattices    {lattices}",
            f"webhooks    {webhooks}",
            f"api_keys    {api_keys} live",
        )
    )


def _signing_config(keys_dir: Path | None) -> SigningKeyConfig:
    if keys_dir is not None:
        return SigningKeyConfig(provider="file", directory=keys_dir)
    try:
        return SigningKeyConfig.from_env(os.environ)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


@contextlib.contextmanager
def _signing_keys(config: SigningKeyConfig) -> Iterator[SigningKeyRing]:
    try:
        ring = open_signing_keys(config, generate_if_empty=False)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from None
    except SigningKeyError as exc:
        raise CommandError(str(exc)) from exc
    try:
        yield ring
    except SigningKeyError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        ring.close()


def _record_platform(event: audit.AuditEvent) -> None:
    """A key command in the platform's chain; without a database, a warning (a key can be
    rotated while PostgreSQL is down, and must be)."""
    warning = audit.record_command(audit.PLATFORM_TENANT, event)
    if warning:
        print(warning, file=sys.stderr)


def _ttl() -> str:
    return os.environ.get("ACCESS_TOKEN_TTL_S") or str(DEFAULT_ACCESS_TOKEN_TTL_S)


def rotate_key(config: SigningKeyConfig) -> str:
    """Makes a new signing key that sorts last (so it signs after a restart); what to do next."""
    if config.token is None:
        return _rotate_file_key(config.directory)
    with _signing_keys(config) as ring:
        old = ring.kids()
        kid = ring.create()
        where = ring.describe()
    _record_platform(audit.AuditEvent("signing_key.rotate", "signing_key", kid))
    lines = [
        f"created kid {kid} in {where}",
        "next:",
        "  1. restart the auth service: it signs with the newest key and publishes all of them;",
        "     lattice and webhook fetch the new key on the first token that names it",
        f"  2. after ACCESS_TOKEN_TTL_S ({_ttl()} s) plus a minute, retire the old keys,",
        "     then restart auth again so the JWKS stops publishing them:",
    ]
    lines += [f"       python -m services.auth.admin retire-key {name}" for name in old] or [
        "       (none: this is the first key)"
    ]
    return "\n".join(lines)


def _rotate_file_key(keys_dir: Path) -> str:
    old = sorted(path.name for path in keys_dir.glob("*.pem")) if keys_dir.is_dir() else []
    try:
        path = generate_key(keys_dir)
    except SigningKeyError as exc:
        raise CommandError(str(exc)) from None
    _record_platform(audit.AuditEvent("signing_key.rotate", "signing_key", path.stem))
    lines = [
        f"wrote {path} (kid {path.stem})",
        "next:",
        "  1. restart the auth service: it signs with the newest key and publishes all of them;",
        "     lattice and webhook fetch the new key on the first token that names it",
        f"  2. after ACCESS_TOKEN_TTL_S ({_ttl()} s) plus a minute, delete the old key files",
        "     (or `retire-key KID`), then restart auth again so the JWKS stops publishing them:",
    ]
    lines += [f"       {keys_dir / name}" for name in old] or [
        "       (none: this is the first key)"
    ]
    return "\n".join(lines)


def retire_key(config: SigningKeyConfig, kid: str) -> str:
    """Destroys a signing key that no longer signs; what to do next."""
    with _signing_keys(config) as ring:
        if kid not in ring.kids():
            raise CommandError(f"no signing key {kid!r} in {ring.describe()}")
        if kid == ring.signing_kid:
            raise CommandError(
                f"{kid} is the newest key, the one that signs: run rotate-key and restart auth"
                " first, so that another key signs"
            )
        ring.destroy(kid)
        where = ring.describe()
    _record_platform(audit.AuditEvent("signing_key.retire", "signing_key", kid))
    return "\n".join(
        (
            f"retired kid {kid} from {where}",
            "next: restart auth, so that its JWKS stops publishing the key. Lattice and webhook",
            "      keep keys they fetched until they restart: if the key leaked, restart them too",
            "      (docs/operations/disaster-recovery.md#leaked-jwt-signing-key)",
        )
    )


def list_keys(config: SigningKeyConfig) -> str:
    """The signing keys, oldest first; the one that signs marked."""
    with _signing_keys(config) as ring:
        signing = ring.signing_kid
        lines = [f"signing keys in {ring.describe()}:"]
        lines += [f"  {kid}{'  (signs)' if kid == signing else ''}" for kid in ring.kids()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.auth.admin",
        description="Operator commands for the auth service's data and keys.",
        epilog="Database commands use DATABASE_ADMIN_URL, or DATABASE_URL when it is unset; key "
        "commands use JWT_KEY_PROVIDER and its settings, as the auth service does. "
        "Exit status: 0 done, 1 failed (e.g. no such tenant), 2 bad usage.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = commands.add_parser(
        "set-plan",
        help="change a tenant's plan (and so its limits)",
        description="Change a tenant's plan. Lattice limits follow at once; per-tenant request "
        "rate limits within the services' plan cache time.",
    )
    plan.add_argument("tenant_id", metavar="TENANT_ID", type=_tenant_id, help="the tenant's UUID")
    plan.add_argument("plan", metavar="PLAN", choices=PLANS, help=f"one of: {', '.join(PLANS)}")

    show = commands.add_parser(
        "show-tenant",
        help="print a tenant's plan and what it owns",
        description="Print a tenant's name, plan, creation time and counts of what it owns.",
    )
    show.add_argument("tenant_id", metavar="TENANT_ID", type=_tenant_id, help="the tenant's UUID")

    keys_help = (
        "a directory of *.pem signing keys, whatever JWT_KEY_PROVIDER says (default: the"
        " provider JWT_KEY_PROVIDER names; file: JWT_KEYS_DIR, else $RUN_DIR/keys)"
    )
    rotate = commands.add_parser(
        "rotate-key",
        help="make a new ES256 signing key and say what to do next",
        description="Make a new ES256 signing key next to the existing ones: a PEM file, or a "
        "key pair generated in the PKCS#11 token (JWT_KEY_PROVIDER=pkcs11). The auth service "
        "signs with the newest after its next restart; older keys stay published until retired.",
    )
    retire = commands.add_parser(
        "retire-key",
        help="destroy a signing key that no longer signs (after rotation, or at once if leaked)",
        description="Destroy a signing key (its PEM file, or its key pair in the token). Refuses "
        "the newest key, which signs: rotate first. Tokens it signed stop verifying once auth, "
        "and for a leaked key lattice and webhook too, have restarted.",
    )
    retire.add_argument("kid", metavar="KID", help="the key's kid (see list-keys)")
    listing = commands.add_parser(
        "list-keys",
        help="list the signing keys, the one that signs marked",
        description="List the signing keys by kid, oldest first; the newest signs.",
    )
    for command in (rotate, retire, listing):
        command.add_argument("--keys-dir", type=Path, default=None, help=keys_help)

    verify = commands.add_parser(
        "verify-audit",
        help="check a tenant's audit chain; exit 1 naming the first edited or removed row",
        description="Recompute the tenant's audit hash chain from its rows: an edited, removed,"
        " inserted or reordered row, or a truncated tail, fails naming the row. Use the nil UUID"
        f" {audit.PLATFORM_TENANT} for the platform's chain.",
    )
    verify.add_argument("tenant_id", metavar="TENANT_ID", type=_tenant_id, help="the tenant's UUID")
    export = commands.add_parser(
        "export-audit",
        help="write a tenant's audit events as JSON lines (for a SIEM), oldest first",
        description="Write the tenant's audit events to standard output as JSON lines, oldest"
        " first, each with its seq, prev_hash and hash, so that the receiver can verify the chain"
        " too (docs/operations/audit.md).",
    )
    export.add_argument("tenant_id", metavar="TENANT_ID", type=_tenant_id, help="the tenant's UUID")
    export.add_argument(
        "--since", type=_since, default=None, help="only events at or after this ISO 8601 time"
    )
    prune = commands.add_parser(
        "prune-audit",
        help="delete audit events older than the retention (default 365 days)",
        description="Delete audit events older than --older-than-days (else AUDIT_RETENTION_DAYS,"
        " else 365) from every chain, or one tenant's; the chain's new start is kept so that"
        " verify-audit still checks the rest. Run daily (deploy/k8s: the audit-retention"
        " CronJob).",
    )
    prune.add_argument("--older-than-days", type=int, default=None, metavar="DAYS")
    prune.add_argument("--tenant", type=_tenant_id, default=None, metavar="TENANT_ID")
    return parser


def _since(value: str) -> datetime:
    try:
        return audit_commands.parse_since(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "set-plan":
            print(set_plan(args.tenant_id, args.plan))
        elif args.command == "show-tenant":
            print(show_tenant(args.tenant_id))
        elif args.command == "rotate-key":
            print(rotate_key(_signing_config(args.keys_dir)))
        elif args.command == "retire-key":
            print(retire_key(_signing_config(args.keys_dir), args.kid))
        elif args.command == "list-keys":
            print(list_keys(_signing_config(args.keys_dir)))
        else:
            return _audit_command(args)
    except (CommandError, audit_commands.AuditCommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _audit_command(args: argparse.Namespace) -> int:
    with _connect() as conn:
        if args.command == "verify-audit":
            line, intact = audit_commands.verify_audit(conn, args.tenant_id)
            print(line)
            return EXIT_OK if intact else EXIT_FAILED
        if args.command == "export-audit":
            count = audit_commands.export_audit(conn, args.tenant_id, sys.stdout, args.since)
            print(f"exported {count} events of tenant {args.tenant_id}", file=sys.stderr)
            return EXIT_OK
        days = audit_commands.retention_days(args.older_than_days)
        for line in audit_commands.prune_audit(conn, days, tenant_id=args.tenant):
            print(line)
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
