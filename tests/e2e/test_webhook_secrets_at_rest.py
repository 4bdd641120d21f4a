"""No webhook secret is readable in a database dump (ADR 56).

Endpoints are made through the gateway (one rotated, so a previous secret exists too) and one
as the release before this one wrote them, in plaintext; `encrypt-secrets` runs as an operator
runs it; then `pg_dump` dumps the whole database, and no secret appears in it in any form:
as text, as its base64 key, as the key's bytes in the dump's hex notation.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from devstack import Stack
from devstack.binaries import postgres_bin_dir
from services.webhook.endpoints import new_secret
from tests.e2e.helpers import Tenant

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]


def forms(secret: str) -> list[bytes]:
    """Every way a secret could show in a plain-format dump."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return [
        secret.encode(),
        secret.removeprefix("whsec_").encode(),
        key.hex().encode(),  # a bytea column holding the raw key
        secret.encode().hex().encode(),  # a bytea column holding the text
    ]


def test_no_secret_is_in_a_dump_after_encrypt_secrets(
    stack: Stack, gateway: httpx.Client, tenant: Tenant, tmp_path: Path
) -> None:
    secrets: list[str] = []
    for n in range(2):
        reply = gateway.post(
            "/v1/webhooks",
            json={"url": f"http://127.0.0.1:9/dump-{n}", "event_types": ["lattice.created"]},
            headers=tenant.headers,
        )
        assert reply.status_code == 200, reply.text
        secrets.append(reply.json()["secret"])
        webhook_id = reply.json()["webhook"]["id"]
    reply = gateway.post(f"/v1/webhooks/{webhook_id}/rotate-secret", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    secrets.append(reply.json()["secret"])
    # An endpoint as the release before wrote it: both secrets in plaintext.
    legacy = [new_secret(), new_secret()]
    with (
        psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as conn,
        conn.transaction(),
    ):
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant.tenant_id,))
        conn.execute(
            "INSERT INTO webhooks (id, tenant_id, url, event_types, secret, previous_secret,"
            " previous_secret_expires_at)"
            " VALUES (%s, %s, 'http://127.0.0.1:9/legacy', ARRAY['*'], %s, %s,"
            " now() + interval '1 day')",
            (str(uuid.uuid4()), tenant.tenant_id, *legacy),
        )
    secrets += legacy

    done = subprocess.run(
        [sys.executable, "-m", "services.webhook.admin", "encrypt-secrets"],
        env={**os.environ, **stack.env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    dump = tmp_path / "catalytic.sql"
    subprocess.run(
        [
            str(postgres_bin_dir() / "pg_dump"),
            "--dbname",
            stack.env["DATABASE_ADMIN_URL"],
            "--file",
            str(dump),
        ],
        check=True,
        timeout=120,
    )
    text = dump.read_bytes()

    assert b"COPY public.webhooks" in text  # the table is in the dump, rows and all
    assert tenant.tenant_id.encode() in text
    for secret in secrets:
        for form in forms(secret):
            assert form not in text, f"a webhook secret is readable in the dump ({form[:12]!r}…)"
