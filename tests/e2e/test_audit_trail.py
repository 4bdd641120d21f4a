"""The audit trail through the gateway: each action records exactly one event with
who, what, when and from where; only owners and admins read it; tenants never see each other's;
the operator's verifier catches an edited or removed row; the export is the chain."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
import pytest

from devstack import Stack
from devstack.stack import REPO_ROOT
from services.common import audit_store
from tests.e2e.helpers import (
    Tenant,
    assert_bad_request,
    assert_status_body,
    eventually,
    invite,
    join,
    log_in,
    register_and_login,
    user_id,
)
from tests.unit.webhook.receiver import Receiver, Reply, running_receiver

pytestmark = pytest.mark.e2e

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]
AGENT = "audit-e2e/1.0"
OPERATOR = "e2e-operator"
LATTICE = {"name": "audited", "dimensions": 2, "size": 4, "constant": {"value": 1}}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


def admin_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m services.auth.admin ARGS` as an operator named OPERATOR runs it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "JWT_"))}
    return subprocess.run(
        [sys.executable, "-m", "services.auth.admin", *args],
        cwd=REPO_ROOT,
        env={
            **base,
            "DATABASE_ADMIN_URL": stack.env["DATABASE_ADMIN_URL"],
            "AUDIT_ACTOR": OPERATOR,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def events(gateway: httpx.Client, who: Tenant, **query: Any) -> list[dict[str, Any]]:
    """Every event the query selects, page after page, newest first."""
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        params = {**query, "page_size": 100, **({"page_token": token} if token else {})}
        reply = gateway.get("/v1/audit-events", params=params, headers=who.headers)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        found += body.get("events", [])
        token = body.get("next_page_token", "")
        if not token:
            return found


def documented_export_checker() -> str:
    """The Python block of docs/operations/audit.md's "Checking an export without our code"."""
    text = (REPO_ROOT / "docs" / "operations" / "audit.md").read_text()
    section = text.split("### Checking an export without our code", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def make_lattices(gateway: httpx.Client, who: Tenant, count: int) -> None:
    """`count` lattices, each a `lattice.create` event."""
    for n in range(count):
        made = gateway.post("/v1/lattices", json={**LATTICE, "name": f"n{n}"}, headers=who.headers)
        assert made.status_code == 200, made.text


def as_owner(stack: Stack, who: Tenant, statement: str) -> None:
    """One statement on the tenant's rows as the tables' owner: what an insider with the owner's
    password could do, and the services' role cannot."""
    with (
        psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as admin,
        admin.transaction(),
    ):
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", (who.tenant_id,))
        admin.execute(statement)


def run_checker(export: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", documented_export_checker()],
        input=export,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def only(found: list[dict[str, Any]], action: str) -> dict[str, Any]:
    [event] = [e for e in found if e["action"] == action]
    return event


def headers(who: Tenant) -> dict[str, str]:
    return {**who.headers, "user-agent": AGENT}


def test_each_action_records_exactly_one_event_with_who_what_when_and_where(
    gateway: httpx.Client, stack: Stack, receiver: Receiver
) -> None:
    owner = register_and_login(gateway)
    owner_id = user_id(gateway, owner)
    expected = Counter({"user.create": 1, "auth.login": 1})
    h = headers(owner)

    # A refused log-in: the account's tenant sees it, never the password.
    wrong = gateway.post(
        "/v1/auth/login",
        json={"email": owner.email, "password": "not the passphrase at all"},
        headers={"user-agent": AGENT},
    )
    assert wrong.status_code == 401
    expected["auth.login"] += 1

    # API keys: created, used (twice: one first use), revoked.
    created = gateway.post("/v1/api-keys", json={"name": "ci"}, headers=h).json()
    key = {"x-api-key": created["key"], "user-agent": AGENT}
    for _ in range(2):
        assert gateway.get("/v1/lattices", headers=key).status_code == 200
    assert gateway.delete(f"/v1/api-keys/{created['id']}", headers=h).status_code == 200
    expected.update(["api_key.create", "api_key.first_use", "api_key.revoke"])

    # Invitations and members: one revoked, one accepted (a new account), promoted, removed.
    revoked = invite(gateway, owner)
    reply = gateway.delete(f"/v1/invitations/{revoked['invitation']['id']}", headers=h)
    assert reply.status_code == 200, reply.text
    grace = join(gateway, owner)
    grace_id = user_id(gateway, grace)
    reply = gateway.patch(f"/v1/members/{grace_id}", json={"role": "admin"}, headers=h)
    assert reply.status_code == 200, reply.text
    assert gateway.delete(f"/v1/members/{grace_id}", headers=h).status_code == 200
    expected.update(
        ["invitation.create"] * 2
        + ["invitation.revoke", "invitation.accept", "user.create", "auth.login"]
        + ["member.role_change", "member.remove"]
    )

    # Refresh, then the spent refresh token again: its family is revoked.
    pair = log_in(gateway, owner.email, owner.password)
    first = gateway.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert first.status_code == 200, first.text
    again = gateway.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 401
    expected.update(["auth.login", "auth.refresh_reuse"])

    # Webhooks: created, secret rotated, a delivery resent, auto-disabled by a 410, enabled,
    # deleted.
    receiver.script("/audited", Reply(200))
    hook = gateway.post(
        "/v1/webhooks",
        json={"url": receiver.url("/audited"), "event_types": ["lattice.created"]},
        headers=h,
    )
    assert hook.status_code == 200, hook.text
    hook_id = hook.json()["webhook"]["id"]
    rotated = gateway.post(f"/v1/webhooks/{hook_id}/rotate-secret", headers=h)
    assert rotated.status_code == 200, rotated.text
    tested = gateway.post(f"/v1/webhooks/{hook_id}/test", headers=h).json()
    receiver.wait_for("/audited", 1)
    resend = f"/v1/webhooks/{hook_id}/deliveries/{tested['id']}/resend"
    assert gateway.post(resend, headers=h).status_code == 200
    receiver.wait_for("/audited", 2)
    receiver.script("/audited", Reply(410, b"gone"))
    assert gateway.post(f"/v1/webhooks/{hook_id}/test", headers=h).status_code == 200
    eventually(
        lambda: not gateway.get(f"/v1/webhooks/{hook_id}", headers=h).json()["enabled"],
        15,
        "the 410 disables the endpoint",
    )
    assert gateway.post(f"/v1/webhooks/{hook_id}/enable", headers=h).status_code == 200
    assert gateway.delete(f"/v1/webhooks/{hook_id}", headers=h).status_code == 200
    expected.update(
        [
            *("webhook.create", "webhook.secret_rotate", "webhook.delivery_resend"),
            *("webhook.auto_disable", "webhook.enable", "webhook.delete"),
        ]
    )

    # Lattices: created and deleted.
    made = gateway.post("/v1/lattices", json=LATTICE, headers=h)
    assert made.status_code == 200, made.text
    lattice_id = made.json()["id"]
    assert gateway.delete(f"/v1/lattices/{lattice_id}", headers=h).status_code == 200
    expected.update(["lattice.create", "lattice.delete"])

    # An operator changes the plan.
    changed = admin_cli(stack, "set-plan", owner.tenant_id, "starter")
    assert changed.returncode == 0, changed.stderr
    expected["tenant.plan_change"] += 1

    # And the owner signs out.
    assert gateway.post("/v1/auth/logout", json={}, headers=h).status_code == 200
    expected["auth.logout"] += 1

    # Read back with a fresh log-in (the last one, counted too).
    reader = Tenant(
        owner.email,
        owner.password,
        owner.tenant_id,
        log_in(gateway, owner.email, owner.password)["access_token"],
    )
    expected["auth.login"] += 1
    found = events(gateway, reader)
    assert Counter(e["action"] for e in found) == expected
    seqs = [int(e["seq"]) for e in found]
    assert seqs == list(range(len(found), 0, -1)), "newest first, a chain without gaps"

    key_event = only(found, "api_key.create")
    assert key_event["actor_type"] == "user"
    assert key_event["actor_id"] == owner_id
    assert (key_event["target_type"], key_event["target_id"]) == ("api_key", created["id"])
    assert key_event["outcome"] == "success"
    # The address the gateway saw (loopback here, or the sandbox's own): one for every call.
    ipaddress.ip_address(key_event["client_address"])
    from_gateway = {
        e["client_address"] for e in found if e["actor_type"] not in ("admin", "system")
    }
    assert from_gateway == {key_event["client_address"]}
    assert key_event["user_agent"] == AGENT
    assert key_event["request_id"]
    assert key_event["details"]["prefix"] == created["prefix"]
    used = only(found, "api_key.first_use")
    assert (used["actor_type"], used["actor_id"]) == ("api_key", created["prefix"])

    refused = [e for e in found if e["action"] == "auth.login" and e["outcome"] == "failure"]
    assert [(e["reason"], e["target_id"], e["actor_type"]) for e in refused] == [
        ("bad_password", owner_id, "anonymous")
    ]
    role = only(found, "member.role_change")
    assert (role["target_id"], role["details"]) == (grace_id, {"from": "member", "to": "admin"})
    reuse = only(found, "auth.refresh_reuse")
    assert (reuse["outcome"], reuse["reason"]) == ("failure", "token_reused")
    disabled = only(found, "webhook.auto_disable")
    assert (disabled["actor_type"], disabled["actor_id"]) == ("system", "webhook-worker")
    assert "410" in disabled["details"]["why"]
    created_hook = only(found, "webhook.create")
    assert created_hook["details"] == {
        "host": "127.0.0.1",
        "event_types": "lattice.created",
        "ordered": False,
    }, "the host only: an endpoint's path or query may be its credential"
    assert only(found, "webhook.delete")["details"] == {"host": "127.0.0.1"}
    plan = only(found, "tenant.plan_change")
    assert (plan["actor_type"], plan["actor_id"]) == ("admin", OPERATOR)
    assert plan["details"] == {"from": "free", "to": "starter"}
    for event in found:
        assert event["occurred_at"].endswith("Z"), event
        assert len(event["hash"]) == 64, event

    verified = admin_cli(stack, "verify-audit", owner.tenant_id)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"audit chain intact ({len(found)} events checked)" in verified.stdout


def test_filters_pages_and_bad_filters_named(gateway: httpx.Client, tenant: Tenant) -> None:
    make_lattices(gateway, tenant, 3)
    everything = events(gateway, tenant)
    assert [e["action"] for e in events(gateway, tenant, action="lattice.create")] == [
        "lattice.create"
    ] * 3
    assert {e["action"] for e in events(gateway, tenant, action="lattice.*")} == {"lattice.create"}
    me = user_id(gateway, tenant)
    assert {e["actor_id"] for e in events(gateway, tenant, actor_id=me)} == {me}
    assert events(gateway, tenant, actor_id="nobody") == []
    assert events(gateway, tenant, start_time="2999-01-01T00:00:00Z") == []
    assert len(events(gateway, tenant, end_time="2999-01-01T00:00:00+01:00")) == len(everything)

    # Two at a time: the same events, in the same order, newest first.
    paged, token = [], ""
    while True:
        params = {"page_size": 2, **({"page_token": token} if token else {})}
        body = gateway.get("/v1/audit-events", params=params, headers=tenant.headers).json()
        assert len(body["events"]) <= 2
        paged += body["events"]
        token = body.get("next_page_token", "")
        if not token:
            break
    assert [e["id"] for e in paged] == [e["id"] for e in everything]

    for params, field in [
        ({"start_time": "yesterday"}, "start_time"),
        ({"end_time": "2026-12-01T00:00:00"}, "end_time"),
        ({"start_time": "2026-12-02T00:00:00Z", "end_time": "2026-12-01T00:00:00Z"}, "end_time"),
        ({"action": "DROP TABLE"}, "action"),
        ({"page_size": 101}, "page_size"),
        ({"page_token": "not-a-token!"}, "page_token"),
    ]:
        reply = gateway.get("/v1/audit-events", params=params, headers=tenant.headers)
        assert_bad_request(reply, field)


def test_only_owners_and_admins_read_the_trail_and_never_another_tenants(
    gateway: httpx.Client, tenant: Tenant
) -> None:
    member = join(gateway, tenant, role="member")
    admin = join(gateway, tenant, role="admin")
    reply = gateway.get("/v1/audit-events", headers=member.headers)
    assert_status_body(reply, 403, PERMISSION_DENIED)
    key = gateway.post("/v1/api-keys", json={"name": "k", "role": "admin"}, headers=tenant.headers)
    assert key.status_code == 200, key.text
    reply = gateway.get("/v1/audit-events", headers={"x-api-key": key.json()["key"]})
    assert_status_body(reply, 403, PERMISSION_DENIED)
    assert gateway.get("/v1/audit-events", headers=admin.headers).status_code == 200

    other = register_and_login(gateway)
    mine = {e["id"] for e in events(gateway, tenant)}
    theirs = events(gateway, other)
    assert theirs, "the other tenant has its own events (its registration and log-in)"
    assert mine.isdisjoint(e["id"] for e in theirs)
    owner_id = user_id(gateway, tenant)
    assert events(gateway, other, actor_id=owner_id) == []


def test_an_unknown_email_and_a_lockout_are_recorded_without_the_address(
    gateway: httpx.Client, stack: Stack
) -> None:
    victim = register_and_login(gateway)
    for _ in range(5):
        reply = gateway.post(
            "/v1/auth/login", json={"email": victim.email, "password": "guess guess guess"}
        )
        assert reply.status_code == 401
    locked = gateway.post("/v1/auth/login", json={"email": victim.email, "password": "x" * 12})
    assert locked.status_code == 429
    # The owner is locked out: read the trail as an auditor would, through the export.
    exported = admin_cli(stack, "export-audit", victim.tenant_id)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    actions = Counter((e["action"], e["outcome"]) for e in lines)
    assert actions[("auth.login", "failure")] == 5
    assert actions[("auth.lockout", "success")] == 1
    lockout = next(e for e in lines if e["action"] == "auth.lockout")
    assert lockout["details"]["attempts"] == 5
    assert lockout["actor_type"] == "system"

    unknown = f"nobody-{uuid.uuid4().hex[:8]}@unknown-{uuid.uuid4().hex[:6]}.example"
    reply = gateway.post("/v1/auth/login", json={"email": unknown, "password": "a" * 12})
    assert reply.status_code == 401
    platform = admin_cli(stack, "export-audit", "00000000-0000-0000-0000-000000000000")
    assert platform.returncode == 0, platform.stderr
    mine = [
        json.loads(line) for line in platform.stdout.splitlines() if unknown.split("@")[1] in line
    ]
    assert len(mine) == 1
    assert mine[0]["reason"] == "unknown_email"
    assert mine[0]["details"] == {"email_domain": unknown.split("@")[1]}
    assert unknown not in platform.stdout


def test_the_verifier_names_an_edited_or_removed_row(gateway: httpx.Client, stack: Stack) -> None:
    owner = register_and_login(gateway)
    make_lattices(gateway, owner, 3)
    intact = admin_cli(stack, "verify-audit", owner.tenant_id)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    # The auditor's own check of an export, as docs/operations/audit.md prints it.
    exported = admin_cli(stack, "export-audit", owner.tenant_id)
    assert exported.returncode == 0, exported.stderr
    checked = run_checker(exported.stdout)
    assert (checked.returncode, checked.stdout.strip()) == (0, "intact"), checked.stderr
    lines = exported.stdout.splitlines()
    second = json.loads(lines[1])
    lines[1] = json.dumps({**second, "actor_id": "someone else"})
    tampered = run_checker("\n".join(lines) + "\n")
    assert tampered.returncode != 0
    assert f"seq {second['seq']}: edited" in tampered.stderr

    as_owner(stack, owner, "UPDATE audit_events SET actor_id = 'someone else' WHERE seq = 3")
    edited = admin_cli(stack, "verify-audit", owner.tenant_id)
    assert edited.returncode == 1, edited.stdout
    assert "BROKEN: row seq 3" in edited.stdout
    assert "edited" in edited.stdout

    as_owner(stack, owner, "DELETE FROM audit_events WHERE seq IN (3, 4)")
    removed = admin_cli(stack, "verify-audit", owner.tenant_id)
    assert removed.returncode == 1, removed.stdout
    assert "seq 3-4 missing" in removed.stdout


def test_the_application_role_cannot_rewrite_the_trail(gateway: httpx.Client, stack: Stack) -> None:
    owner = register_and_login(gateway)
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as app:
        for statement in (
            "UPDATE audit_events SET outcome = 'failure'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
        ):
            with app.transaction(force_rollback=True):
                app.execute("SELECT set_config('app.tenant_id', %s, true)", (owner.tenant_id,))
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute(statement)


# What a secret looks like in this product: access tokens (JWS), refresh tokens, whole API
# keys, invitation tokens, webhook secrets, password hashes, and the e2e suite's passwords
# (tests/e2e/helpers.py: every one ends in "staple").
SECRET_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]{10,}\.|rt_[A-Za-z0-9_-]{40,}|cat_[a-z2-7]{12}_[A-Za-z0-9_-]{43}"
    r"|inv_[A-Za-z0-9_-]{43}|whsec_|\$argon2|staple"
)


@pytest.mark.after_e2e
def test_no_secret_password_token_or_whole_key_is_in_any_event(stack: Stack) -> None:
    """After the whole e2e suite (this test runs last): every event of every chain, all its
    text, holds nothing shaped like a secret."""
    scanned = 0
    with psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as admin:
        for tenant_id in audit_store.chained_tenants(admin):
            with admin.transaction():
                admin.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
                rows = admin.execute(
                    "SELECT seq, concat_ws(' ', actor_id, action, target_type, target_id, reason,"
                    " client_address, user_agent, request_id, details::text) FROM audit_events"
                    " WHERE tenant_id = %s",
                    (tenant_id,),
                ).fetchall()
            for seq, text in rows:
                scanned += 1
                found = SECRET_SHAPES.search(text)
                assert found is None, f"tenant {tenant_id} event seq {seq}: {found.group(0)!r}"
    assert scanned > 0, "the suite recorded events to scan"


def test_retention_prunes_old_events_and_the_rest_still_verifies(
    gateway: httpx.Client, stack: Stack
) -> None:
    owner = register_and_login(gateway)
    make_lattices(gateway, owner, 2)
    # The registration and the log-in, as if a year and more ago.
    as_owner(
        stack,
        owner,
        "UPDATE audit_events SET occurred_at = now() - interval '400 days' WHERE seq <= 2",
    )
    kept = admin_cli(stack, "prune-audit", "--tenant", owner.tenant_id, "--older-than-days", "500")
    assert kept.returncode == 0, kept.stderr
    assert "nothing older than 500 days" in kept.stdout
    pruned = admin_cli(stack, "prune-audit", "--tenant", owner.tenant_id)
    assert pruned.returncode == 0, pruned.stderr
    assert f"tenant {owner.tenant_id}: pruned 2 events" in pruned.stdout
    left = events(gateway, owner)
    assert [int(e["seq"]) for e in left][-1] == 3, "seq 1 and 2 are gone, the rest stays"
    assert left[0]["action"] == "audit.prune"
    assert left[0]["details"] == {"rows": 2, "older_than_days": 365}
    verified = admin_cli(stack, "verify-audit", owner.tenant_id)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    bad = admin_cli(stack, "prune-audit", "--older-than-days", "0")
    assert bad.returncode == 1
    assert "at least 1 day" in bad.stderr


def platform_events(stack: Stack) -> list[dict[str, Any]]:
    exported = admin_cli(stack, "export-audit", "00000000-0000-0000-0000-000000000000")
    assert exported.returncode == 0, exported.stderr
    return [json.loads(line) for line in exported.stdout.splitlines()]


def test_operator_commands_are_recorded_with_the_operator_as_actor(
    gateway: httpx.Client, stack: Stack, tmp_path: Path
) -> None:
    owner = register_and_login(gateway)
    shown = admin_cli(stack, "show-tenant", owner.tenant_id)
    assert shown.returncode == 0, shown.stderr
    rotated = admin_cli(stack, "rotate-key", "--keys-dir", str(tmp_path / "keys"))
    assert rotated.returncode == 0, rotated.stderr
    kid = rotated.stdout.split("(kid ", 1)[1].split(")", 1)[0]
    # A newer key signs now, so the first may be retired.
    rotated_again = admin_cli(stack, "rotate-key", "--keys-dir", str(tmp_path / "keys"))
    assert rotated_again.returncode == 0, rotated_again.stderr
    retired = admin_cli(stack, "retire-key", kid, "--keys-dir", str(tmp_path / "keys"))
    assert retired.returncode == 0, retired.stderr

    tenant_show = only(events(gateway, owner), "tenant.show")
    assert (tenant_show["actor_type"], tenant_show["actor_id"]) == ("admin", OPERATOR)
    keys = [e for e in platform_events(stack) if e["target_id"] == kid]
    assert [(e["action"], e["actor_id"]) for e in keys] == [
        ("signing_key.rotate", OPERATOR),
        ("signing_key.retire", OPERATOR),
    ]
