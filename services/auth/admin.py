"""Operator command line: `python -m services.auth.admin {set-plan,show-tenant,rotate-key}`.

Talks to PostgreSQL directly as DATABASE_ADMIN_URL (else DATABASE_URL). Row-level security is
FORCED, so it applies to the tables' owner too: each command sets `app.tenant_id` for its own
transaction, exactly as the services do, and can touch only the tenant it names.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from services.auth.config import PLANS
from services.auth.keys import KeyRing, generate_key
from services.common.config import redact_url

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_ACCESS_TOKEN_TTL_S = 600
_ROTATE_ATTEMPTS = 3


class CommandError(Exception):
    """A failure to report in one line and exit 1 (no such tenant, database unreachable)."""


def _tenant_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a tenant id (a UUID)") from None


def _database_url() -> str:
    url = os.environ.get("DATABASE_ADMIN_URL") or os.environ.get("DATABASE_URL")
    if not url:
        raise CommandError("set DATABASE_ADMIN_URL (or DATABASE_URL) to the database's libpq URL")
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
    return f"tenant {tenant_id}: plan {old} -> {plan}"


def show_tenant(tenant_id: str) -> str:
    """The tenant's name, plan, creation time and counts of what it owns."""
    with _connect() as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        row = conn.execute(
            "SELECT name, plan, created_at,"
            " (SELECT count(*) FROM users) AS users,"
            " (SELECT count(*) FROM lattices) AS lattices,"
            " (SELECT count(*) FROM webhooks) AS webhooks,"
            " (SELECT count(*) FROM api_keys WHERE revoked_at IS NULL) AS api_keys"
            " FROM tenants WHERE id = %s",
            (tenant_id,),
        ).fetchone()
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


def _default_keys_dir() -> Path:
    configured = os.environ.get("JWT_KEYS_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("RUN_DIR") or ".run") / "keys"


def rotate_key(keys_dir: Path) -> str:
    """Writes a new signing key that sorts last (so it signs after a restart); what to do next."""
    old = sorted(path.name for path in keys_dir.glob("*.pem")) if keys_dir.is_dir() else []
    for attempt in range(_ROTATE_ATTEMPTS):
        path = generate_key(keys_dir)
        if KeyRing.load(keys_dir, generate_if_empty=False).signing.kid == path.stem:
            break
        # Names sort by the second they were made, then by a random suffix: made in the same
        # second as the newest key, the new one may sort before it. A second later it cannot.
        path.unlink()
        if attempt + 1 == _ROTATE_ATTEMPTS:
            raise CommandError(
                f"the new key sorts before {old[-1]}, so it would never sign;"
                " check the clock and the key file names"
            )
        time.sleep(1.1)
    ttl = os.environ.get("ACCESS_TOKEN_TTL_S") or str(DEFAULT_ACCESS_TOKEN_TTL_S)
    lines = [
        f"wrote {path} (kid {path.stem})",
        "next:",
        "  1. restart the auth service: it signs with the newest key and publishes all of them;",
        "     lattice and webhook fetch the new key on the first token that names it",
        f"  2. after ACCESS_TOKEN_TTL_S ({ttl} s) plus a minute, delete the old key files,",
        "     then restart auth again so the JWKS stops publishing them:",
    ]
    lines += [f"       {keys_dir / name}" for name in old] or [
        "       (none: this is the first key)"
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.auth.admin",
        description="Operator commands for the auth service's data and keys.",
        epilog="Database commands use DATABASE_ADMIN_URL, or DATABASE_URL when it is unset. "
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

    rotate = commands.add_parser(
        "rotate-key",
        help="write a new ES256 signing key and say what to do next",
        description="Write a new ES256 signing key next to the existing ones. The auth service "
        "signs with the newest after its next restart; older keys stay published until removed.",
    )
    rotate.add_argument(
        "--keys-dir",
        type=Path,
        default=None,
        help="directory of *.pem signing keys (default: JWT_KEYS_DIR, else $RUN_DIR/keys)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "set-plan":
            print(set_plan(args.tenant_id, args.plan))
        elif args.command == "show-tenant":
            print(show_tenant(args.tenant_id))
        else:
            print(rotate_key(args.keys_dir or _default_keys_dir()))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
