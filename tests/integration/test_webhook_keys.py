"""Webhook secrets under management (ADR 56), against real PostgreSQL, the service's own factory
and the admin command line as an operator runs it: sealed at rest, the release before's
plaintext sealed by `encrypt-secrets`, KEK rotation while deliveries go on (under a key
directory and under a SoftHSM2 token), the key-loss playbook, and the way back for a rollback.
Every delivery is checked with the Standard Webhooks reference library.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from catalytic.webhook.v1 import webhook_service_pb2 as pb
from standardwebhooks.webhooks import Webhook as Verifier

from devstack import Stack
from services.common.keys.envelope import kek_id_of
from services.common.keys.files import FileKekRing
from services.webhook.endpoints import new_secret
from services.webhook.worker import UNSIGNABLE
from tests.e2e.helpers import Tenant, register_and_login
from tests.unit.common.softhsm import clear_keks, softhsm_token
from tests.unit.webhook.harness import Scratch, Server, shared_kek_dir, webhook_server
from tests.unit.webhook.receiver import Receiver, running_receiver

pytestmark = pytest.mark.integration

FAILED = pb.Delivery.FAILED
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tenant(gateway: httpx.Client) -> Tenant:
    return register_and_login(gateway)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


@pytest.fixture(params=["file", "pkcs11"])
def kek_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A ring with one KEK, of each provider, as the service's and the admin's settings."""
    if request.param == "file":
        FileKekRing(tmp_path / "kek").create()
        yield {"KEK_PROVIDER": "file", "KEK_DIR": str(tmp_path / "kek")}
        return
    token = softhsm_token()
    clear_keks(token)
    ring = token.ring()
    ring.create()
    ring.close()
    try:
        yield token.env()
    finally:
        clear_keks(token)


def admin(
    stack: Stack,
    scratch: Scratch,
    kek_env: dict[str, str],
    *args: str,
    ok: bool = True,
    as_url: str | None = None,
) -> str:
    """`python -m services.webhook.admin ARGS` as an operator runs it, on the scratch database
    (as its owner unless `as_url` says otherwise)."""
    env = {
        **os.environ,
        **stack.env,
        "DATABASE_ADMIN_URL": as_url or scratch.admin_url,
        "DATABASE_URL": scratch.app_url,
        **kek_env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.webhook.admin", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode == 0) == ok, (done.returncode, done.stdout, done.stderr)
    return done.stdout + done.stderr


def secret_columns(scratch: Scratch, webhook_id: str) -> dict[str, Any]:
    [row] = scratch.query(
        "SELECT secret, secret_sealed, previous_secret, previous_secret_sealed"
        " FROM webhooks WHERE id = %s",
        (webhook_id,),
    )
    return dict(zip(("secret", "sealed", "previous", "previous_sealed"), row, strict=True))


def arrival(receiver: Receiver, path: str, marker: str, within: float = 20.0) -> Any:
    """The request to `path` whose body carries `marker`, waiting up to `within` s."""
    deadline = time.monotonic() + within
    while True:
        found = [r for r in receiver.received(path) if marker.encode() in r.body]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no delivery of {marker} to {path}"
        time.sleep(0.05)


async def send_and_verify(hub: Server, receiver: Receiver, expected: dict[str, list[str]]) -> None:
    """Publishes one event; its delivery to each path verifies with each of that path's secrets."""
    marker = uuid.uuid4().hex
    await hub.publish(marker=marker)
    for path, secrets in expected.items():
        request = await asyncio.to_thread(arrival, receiver, path, marker)
        for secret in secrets:
            assert Verifier(secret).verify(request.body, request.headers)["data"] == {
                "marker": marker
            }


def secrets_under(status: str, kek_id: str) -> int:
    """The count key-status prints for one KEK."""
    [line] = [line for line in status.splitlines() if line.strip().startswith(kek_id)]
    return int(line.split()[-2])


def sealed_kek(scratch: Scratch, webhook_id: str) -> str:
    return kek_id_of(bytes(secret_columns(scratch, webhook_id)["sealed"]))


def insert_plaintext_endpoint(
    scratch: Scratch, tenant_id: str, url: str, secret: str, previous: str | None = None
) -> str:
    """An endpoint as the release before ADR 56 writes it: its secrets in plaintext."""
    webhook_id = str(uuid.uuid4())
    scratch.query(
        "WITH ctx AS (SELECT set_config('app.tenant_id', %s, true))"
        " INSERT INTO webhooks (id, tenant_id, url, event_types, secret, previous_secret,"
        "  previous_secret_expires_at)"
        " SELECT %s, %s, %s, ARRAY['*'], %s, %s,"
        "  CASE WHEN %s::text IS NULL THEN NULL ELSE now() + interval '1 day' END FROM ctx"
        " RETURNING id",
        (tenant_id, webhook_id, tenant_id, url, secret, previous, previous),
    )
    return webhook_id


# ---------------------------------------------------------------------------- at rest
async def test_the_service_writes_secrets_sealed_only(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    async with webhook_server(stack, scratch, tenant) as hub:
        created = await hub.create(receiver.url("/sealed"))
        webhook_id = created.webhook.id
        first = secret_columns(scratch, webhook_id)
        rotated = await hub.stub.RotateWebhookSecret(
            pb.RotateWebhookSecretRequest(id=webhook_id), metadata=hub.auth
        )
        await send_and_verify(hub, receiver, {"/sealed": [created.secret, rotated.secret]})

    columns = secret_columns(scratch, webhook_id)
    assert first["secret"] is None
    assert columns["secret"] is None
    assert columns["previous"] is None
    # The sealed current secret became the sealed previous one, unchanged.
    assert bytes(columns["previous_sealed"]) == bytes(first["sealed"])
    for secret in (created.secret, rotated.secret):
        for sealed in (columns["sealed"], columns["previous_sealed"]):
            assert secret.encode() not in bytes(sealed)
            assert secret.removeprefix("whsec_").encode() not in bytes(sealed)


async def test_encrypt_secrets_seals_what_the_release_before_wrote(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver, kek_env: dict[str, str]
) -> None:
    scratch.add_tenant(tenant.tenant_id)
    current, previous = new_secret(), new_secret()
    webhook_id = insert_plaintext_endpoint(
        scratch, tenant.tenant_id, receiver.url("/legacy"), current, previous
    )
    async with webhook_server(stack, scratch, tenant, **kek_env) as hub:
        # Before: the plaintext signs (this release reads the release before's rows).
        await send_and_verify(hub, receiver, {"/legacy": [current, previous]})

        output = admin(stack, scratch, kek_env, "encrypt-secrets")

        assert "sealed the plaintext secrets of 1 endpoint(s)" in output
        columns = secret_columns(scratch, webhook_id)
        assert columns["secret"] is None
        assert columns["previous"] is None
        assert columns["sealed"] is not None
        assert columns["previous_sealed"] is not None
        await send_and_verify(hub, receiver, {"/legacy": [current, previous]})
    status = admin(stack, scratch, kek_env, "key-status")
    assert "secrets in plaintext: 0" in status
    assert "2 secret(s)" in status
    # Nothing left to do: a second run changes nothing.
    assert "sealed the plaintext secrets of 0" in admin(stack, scratch, kek_env, "encrypt-secrets")


async def test_a_rotation_by_the_release_before_keeps_the_sealed_secret_as_previous(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    """During a rolling update the release before may rotate a sealed row; migration 0010's
    trigger moves the sealed secret to previous, as that release's rotation means to."""
    async with webhook_server(stack, scratch, tenant) as hub:
        created = await hub.create(receiver.url("/mixed"))
        webhook_id = created.webhook.id
        newer = new_secret()
        scratch.query(
            "WITH ctx AS (SELECT set_config('app.tenant_id', %s, true))"
            " UPDATE webhooks SET previous_secret = secret,"
            " previous_secret_expires_at = now() + interval '1 day', secret = %s"
            " FROM ctx WHERE id = %s RETURNING id",
            (tenant.tenant_id, newer, webhook_id),
        )
        await send_and_verify(hub, receiver, {"/mixed": [newer, created.secret]})


async def test_decrypt_secrets_gives_the_release_before_its_plaintext_back(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    async with webhook_server(stack, scratch, tenant) as hub:
        created = await hub.create(receiver.url("/back"))
    kek_env = {"KEK_DIR": str(shared_kek_dir())}

    assert "1 endpoint(s)" in admin(stack, scratch, kek_env, "decrypt-secrets")

    columns = secret_columns(scratch, created.webhook.id)
    assert columns["secret"] == created.secret
    assert columns["sealed"] is None


def test_the_key_commands_refuse_a_role_that_cannot_see_every_tenant(
    stack: Stack, scratch: Scratch
) -> None:
    """As the application role every tenant's endpoints are invisible: a silent no-op would
    look like success, so the tool refuses."""
    kek_env = {"KEK_DIR": str(shared_kek_dir())}
    output = admin(stack, scratch, kek_env, "key-status", ok=False, as_url=scratch.app_url)
    assert "does not own the webhooks table" in output


# ---------------------------------------------------------------------------- KEK rotation
async def test_kek_rotation_rewraps_while_deliveries_go_on(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver, kek_env: dict[str, str]
) -> None:
    async with webhook_server(stack, scratch, tenant, **kek_env) as hub:
        created = [await hub.create(receiver.url(f"/r{n}")) for n in range(3)]
        expected = {f"/r{n}": [c.secret] for n, c in enumerate(created)}
        [old_kek] = {sealed_kek(scratch, c.webhook.id) for c in created}

        rotated = admin(stack, scratch, kek_env, "rotate-kek")
        assert f"retire-kek {old_kek}" in rotated
        # Secrets under the old KEK still open; it cannot go until they are rewrapped.
        assert "still under" in admin(stack, scratch, kek_env, "retire-kek", old_kek, ok=False)
        await send_and_verify(hub, receiver, expected)

        rewrap = asyncio.create_task(
            asyncio.to_thread(admin, stack, scratch, kek_env, "rewrap-secrets")
        )
        for _ in range(5):
            await send_and_verify(hub, receiver, expected)
        assert "rewrapped under" in await rewrap

        [new_kek] = {sealed_kek(scratch, c.webhook.id) for c in created}
        assert new_kek != old_kek
        status = admin(stack, scratch, kek_env, "key-status")
        assert secrets_under(status, old_kek) == 0
        assert secrets_under(status, new_kek) == 3

        assert "destroyed" in admin(stack, scratch, kek_env, "retire-kek", old_kek)
        # The running service, never restarted, finds the new KEK by its id, signs with the
        # rewrapped secrets and wraps new endpoints' secrets with it.
        await send_and_verify(hub, receiver, expected)
        late = await hub.create(receiver.url("/late"))
        assert sealed_kek(scratch, late.webhook.id) == new_kek
        await send_and_verify(hub, receiver, {**expected, "/late": [late.secret]})


# ---------------------------------------------------------------------------- key loss
async def test_lost_kek_playbook(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver, tmp_path: Path
) -> None:
    """The KEK is gone: deliveries fail unsent; rotate-all-endpoint-secrets gives every
    endpoint a new secret and disables it; the tenant rotates, installs, enables; the paused
    delivery goes out signed with the secret the tenant holds."""
    directory = tmp_path / "kek"
    lost = FileKekRing(directory).create()
    kek_env = {"KEK_DIR": str(directory)}
    scratch.add_tenant(tenant.tenant_id)
    scratch.query(
        "WITH ctx AS (SELECT set_config('app.tenant_id', %s, true))"
        " INSERT INTO users (id, tenant_id, email, password_hash, role)"
        " SELECT gen_random_uuid(), %s, %s, 'x', 'owner' FROM ctx RETURNING id",
        (tenant.tenant_id, tenant.tenant_id, tenant.email),
    )
    async with webhook_server(stack, scratch, tenant, **kek_env) as hub:
        created = await hub.create(receiver.url("/lost"))
        webhook_id = created.webhook.id
    (directory / f"{lost}.key").unlink()
    admin(stack, scratch, kek_env, "rotate-kek")
    status = admin(stack, scratch, kek_env, "key-status", ok=False)
    assert f"{lost}  MISSING  1 secret(s)" in status

    # Retries a few seconds apart: the failed delivery is still waiting when it is paused.
    slow_retries = {"WEBHOOK_RETRY_SCHEDULE_S": "0,4,4,4,4"}
    async with webhook_server(stack, scratch, tenant, **kek_env, **slow_retries) as hub:
        marker = uuid.uuid4().hex
        await hub.publish(marker=marker)
        rows = await hub.wait_for_log(
            webhook_id, lambda rows: any(r.status == FAILED for r in rows)
        )
        assert next(r for r in rows if r.status == FAILED).error == UNSIGNABLE
        assert receiver.received("/lost") == []

        report = tmp_path / "tenants.jsonl"
        output = admin(
            stack, scratch, kek_env, "rotate-all-endpoint-secrets", "--report", str(report)
        )
        assert "replaced the secret of 1 endpoint(s) of 1 tenant(s)" in output
        [notice] = [json.loads(line) for line in report.read_text().splitlines()]
        assert notice["tenant_id"] == tenant.tenant_id
        assert notice["owner_emails"] == [tenant.email]
        assert notice["endpoints"] == [{"id": webhook_id, "url": receiver.url("/lost")}]
        assert report.stat().st_mode & 0o777 == 0o600

        # On the audit trail (ADR 65): the tenant's own chain says an operator replaced its
        # secrets; the platform's chain holds the key commands.
        def actions(tenant_id: str) -> list[str]:
            return [
                row[0]
                for row in scratch.query(
                    "WITH ctx AS (SELECT set_config('app.tenant_id', %s, true))"
                    " SELECT action FROM audit_events, ctx WHERE tenant_id = %s ORDER BY seq",
                    (tenant_id, tenant_id),
                )
            ]

        assert "webhook.secret_rotate_all" in actions(tenant.tenant_id)
        assert {"webhook_kek.rotate", "webhook_secrets.rotate_all"} <= set(
            actions("00000000-0000-0000-0000-000000000000")
        )
        got = await hub.stub.GetWebhook(pb.GetWebhookRequest(id=webhook_id), metadata=hub.auth)
        assert not got.enabled
        assert "rotate-secret" in got.disabled_reason
        assert "MISSING" not in admin(stack, scratch, kek_env, "key-status")

        # The tenant's side, through the API only: the delivery that waited goes out signed
        # with the secret the tenant now holds.
        rotated = await hub.stub.RotateWebhookSecret(
            pb.RotateWebhookSecretRequest(id=webhook_id), metadata=hub.auth
        )
        await hub.stub.EnableWebhook(pb.EnableWebhookRequest(id=webhook_id), metadata=hub.auth)
        request = await asyncio.to_thread(arrival, receiver, "/lost", marker)
        assert Verifier(rotated.secret).verify(request.body, request.headers)["data"] == {
            "marker": marker
        }
