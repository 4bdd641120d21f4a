"""Operator command line for webhook secrets and their keys: `python -m services.webhook.admin`.

Commands: key-status, encrypt-secrets, decrypt-secrets, rotate-kek, rewrap-secrets,
retire-kek, rotate-all-endpoint-secrets (docs/operations/admin-cli.md, ADR 56). Talks to
PostgreSQL as the tables' owner (DATABASE_ADMIN_URL; DATABASE_URL if it is the owner's),
endpoint by endpoint in each tenant's
transaction (services/webhook/key_maintenance.py), and reaches the key-encryption keys exactly
as the webhook service does (KEK_PROVIDER and its settings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from services.common import audit
from services.common.config import (
    ADMIN_DATABASE_UNSET,
    ConfigError,
    admin_database_url,
    redact_url,
)
from services.common.keys.base import KekError, KekRing
from services.common.keys.config import KekConfig, open_ring
from services.webhook import key_maintenance as keys
from services.webhook.secret_box import SecretBox

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure to report in one line and exit 1."""


def _connect() -> keys.Connection:
    url = admin_database_url()
    if not url:
        raise CommandError(ADMIN_DATABASE_UNSET)
    try:
        conn = psycopg.connect(url, connect_timeout=10, autocommit=True, row_factory=dict_row)
    except psycopg.OperationalError as exc:
        raise CommandError(f"cannot connect to PostgreSQL at {redact_url(url)}") from exc
    try:
        keys.check_owner(conn)
    except keys.NotOwner as exc:
        conn.close()
        raise CommandError(str(exc)) from None
    return conn


def _ring(config: KekConfig) -> KekRing:
    try:
        return open_ring(config)
    except KekError as exc:
        raise CommandError(str(exc)) from exc


def _report(verb: str, result: keys.Pass) -> str:
    lines = [f"{verb} {result.changed} endpoint(s); {result.unchanged} needed nothing"]
    if result.failures:
        lines.append(f"FAILED for {len(result.failures)} endpoint(s), left as they were:")
        lines += [f"  {failure}" for failure in result.failures]
    return "\n".join(lines)


def key_status(config: KekConfig, ring: KekRing) -> tuple[str, bool]:
    """Every KEK and how many secrets each wraps; whether all secrets are sealed and openable
    by a KEK in the ring (nothing in plaintext, nothing under a missing KEK)."""
    with closing(_connect()) as conn:
        status = keys.key_status(conn)
    ids = ring.ids()
    current = ring.current_id if ids else None
    lines = [f"key-encryption keys: {config.describe()}"]
    lines += [
        f"  {kek_id}  {'current' if kek_id == current else '       '}"
        f"  {status.sealed.get(kek_id, 0)} secret(s)"
        for kek_id in ids
    ] or ["  (none)"]
    missing = {kek_id: n for kek_id, n in status.sealed.items() if kek_id not in ids}
    lines += [f"  {kek_id}  MISSING  {n} secret(s)" for kek_id, n in sorted(missing.items())]
    lines.append(f"endpoints: {status.endpoints}")
    lines.append(f"secrets in plaintext: {status.plaintext}")
    if status.malformed:
        lines.append(f"sealed values that are not sealed values: {status.malformed}")
    healthy = not (missing or status.plaintext or status.malformed)
    return "\n".join(lines), healthy


def rotate_kek(ring: KekRing) -> str:
    old = ring.ids()
    kek_id = ring.create()
    lines = [
        f"created key-encryption key {kek_id}; it wraps every data key made from now on",
        "next:",
        "  1. restart every webhook replica (or let each find it: a replica that meets an",
        "     unknown KEK id reads its keys again), so that all of them wrap with it;",
        "  2. python -m services.webhook.admin rewrap-secrets",
        "  3. python -m services.webhook.admin key-status   (0 secrets under the old KEKs)",
    ]
    lines += [
        f"  4. python -m services.webhook.admin retire-kek {kek_id_old}" for kek_id_old in old
    ]
    return "\n".join(lines)


def retire_kek(ring: KekRing, kek_id: str) -> str:
    if kek_id not in ring.ids():
        raise CommandError(f"no key-encryption key {kek_id} in the ring")
    if kek_id == ring.current_id:
        raise CommandError(f"{kek_id} is the current KEK; create a newer one first (rotate-kek)")
    with closing(_connect()) as conn:
        status = keys.key_status(conn)
    if status.sealed.get(kek_id):
        raise CommandError(
            f"{status.sealed[kek_id]} secret(s) are still under {kek_id}: run rewrap-secrets"
        )
    ring.destroy(kek_id)
    return f"destroyed key-encryption key {kek_id}; no secret was under it"


def rotate_all(box: SecretBox, *, disable: bool, report: Path | None) -> str:
    with closing(_connect()) as conn:
        notices = keys.rotate_all_endpoint_secrets(conn, box, disable=disable)
    documents = [notice.as_json() for notice in notices]
    if report is not None:
        fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(document) + "\n" for document in documents)
    count = sum(len(notice.endpoints) for notice in notices)
    lines = [
        f"replaced the secret of {count} endpoint(s) of {len(notices)} tenant(s)"
        + (
            "; they are disabled and their deliveries paused until the tenant enables them"
            if disable
            else ""
        ),
        "tell each tenant (one JSON line per tenant"
        + (f", also in {report}):" if report is not None else "):"),
    ]
    lines += [json.dumps(document) for document in documents]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.webhook.admin",
        description="Operator commands for webhook signing secrets and their key-encryption keys.",
        epilog="Uses DATABASE_ADMIN_URL (the tables' owner) and the KEK settings of the webhook "
        "service (KEK_PROVIDER, KEK_DIR, PKCS11_*). Exit status: 0 done, 1 failed or refused, "
        "2 bad usage.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "key-status",
        help="list the KEKs and how many secrets each wraps; exit 1 if any is in plaintext "
        "or under a missing KEK",
    )
    encrypt = commands.add_parser(
        "encrypt-secrets",
        help="seal every secret still in plaintext and set the plaintext to NULL",
        description="Seal every secret still in plaintext under the current KEK and set the "
        "plaintext to NULL. Run once no webhook replica of the release before ADR 56 is left: "
        "that release signs from the plaintext only.",
    )
    encrypt.add_argument(
        "--create-kek-if-none",
        action="store_true",
        help="create a KEK first when the ring has none (`make up` does, for development)",
    )
    commands.add_parser(
        "decrypt-secrets",
        help="write every sealed secret back in plaintext (before rolling back past ADR 56)",
    )
    commands.add_parser(
        "rotate-kek",
        help="create a new KEK that wraps new data keys from now on, and say what follows",
    )
    commands.add_parser(
        "rewrap-secrets",
        help="rewrap every data key not under the current KEK (the secrets do not change)",
    )
    retire = commands.add_parser(
        "retire-kek",
        help="destroy a KEK that is not current and wraps no secret any more",
    )
    retire.add_argument("kek_id", metavar="KEK_ID", help="the KEK's id (see key-status)")
    rotate = commands.add_parser(
        "rotate-all-endpoint-secrets",
        help="key loss: a new secret for every endpoint of every tenant, and what to tell them",
        description="Give every endpoint a new secret under the current KEK, with no overlap, "
        "and print one JSON line per tenant saying what to tell it. By default each endpoint "
        "is disabled (deliveries paused) until its tenant rotates, installs and enables.",
    )
    rotate.add_argument(
        "--keep-enabled",
        action="store_true",
        help="leave endpoints enabled: deliveries go on, failing the receivers' verification "
        "until each tenant installs a new secret",
    )
    rotate.add_argument(
        "--report", type=Path, default=None, help="also write the JSON lines to this file (0600)"
    )
    return parser


def run(args: argparse.Namespace) -> tuple[str, bool]:
    """The command's output and whether it succeeded."""
    try:
        config = KekConfig.from_env()
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    ring = _ring(config)
    try:
        if args.command == "key-status":
            return key_status(config, ring)
        if args.command == "rotate-kek":
            return rotate_kek(ring), True
        if args.command == "retire-kek":
            return retire_kek(ring, args.kek_id), True
        if args.command == "encrypt-secrets" and args.create_kek_if_none and not ring.ids():
            ring.create()
        current = ring.current_id  # KekError, saying how to create one, when there is none
        box = SecretBox(ring)
        if args.command == "rotate-all-endpoint-secrets":
            return rotate_all(box, disable=not args.keep_enabled, report=args.report), True
        operation, verb = {
            "encrypt-secrets": (keys.encrypt_secrets, "sealed the plaintext secrets of"),
            "decrypt-secrets": (keys.decrypt_secrets, "wrote back in plaintext the secrets of"),
            "rewrap-secrets": (keys.rewrap_secrets, f"rewrapped under {current}"),
        }[args.command]
        with closing(_connect()) as conn:
            result = operation(conn, box)
        return _report(verb, result), not result.failures
    finally:
        ring.close()


# What each command records in the platform's audit chain (key-status only reads).
AUDITED = {
    "rotate-kek": "webhook_kek.rotate",
    "retire-kek": "webhook_kek.retire",
    "encrypt-secrets": "webhook_secrets.encrypt",
    "decrypt-secrets": "webhook_secrets.decrypt",
    "rewrap-secrets": "webhook_secrets.rewrap",
    "rotate-all-endpoint-secrets": "webhook_secrets.rotate_all",
}


def _audit(args: argparse.Namespace, ok: bool, reason: str = "") -> None:
    action = AUDITED.get(args.command)
    if action is None:
        return
    target = getattr(args, "kek_id", "") or ""
    event = audit.AuditEvent(
        action,
        "webhook_kek",
        target,
        audit.SUCCESS if ok else audit.FAILURE,
        reason,
    )
    warning = audit.record_command(audit.PLATFORM_TENANT, event)
    if warning:
        print(warning, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        output, ok = run(args)
    except (CommandError, KekError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        _audit(args, ok=False, reason="refused")
        return EXIT_FAILED
    print(output)
    _audit(args, ok=ok, reason="" if ok else "partial")
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
