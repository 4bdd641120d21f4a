"""Teams through the gateway: invitations, memberships, roles taking effect at once,
the last owner, and a user in two tenants never seeing one with the other's token."""

from __future__ import annotations

import hashlib
import uuid

import grpc
import httpx
import psycopg
import pytest

from devstack import Stack
from tests.e2e.helpers import (
    Tenant,
    assert_bad_request,
    assert_status_body,
    invite,
    join,
    log_in,
    register_and_login,
    user_id,
)

pytestmark = pytest.mark.e2e

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS.value[0]
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
LATTICE = {"name": "team", "dimensions": 2, "size": 4, "constant": {"value": 1}}
WEBHOOK = {"url": "http://127.0.0.1:9/team", "event_types": ["lattice.created"]}


def accept(gateway: httpx.Client, token: str, password: str = "", **headers: str) -> httpx.Response:
    body = {"token": token, **({"password": password} if password else {})}
    return gateway.post("/v1/invitations/accept", json=body, headers=headers)


def lattice_ids(gateway: httpx.Client, who: Tenant | dict[str, str]) -> set[str]:
    headers = who.headers if isinstance(who, Tenant) else who
    reply = gateway.get("/v1/lattices", headers=headers)
    assert reply.status_code == 200, reply.text
    return {item["id"] for item in reply.json()["lattices"]}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------- invitations
def test_an_invitee_joins_with_a_password_and_shares_the_tenants_work(
    gateway: httpx.Client, tenant: Tenant, stack: Stack
) -> None:
    invited = invite(gateway, tenant)
    token = invited["token"]
    assert token.startswith("inv_")
    assert invited["invitation"]["role"] == "member"
    listed = gateway.get("/v1/invitations", headers=tenant.headers)
    assert [i["id"] for i in listed.json()["invitations"]] == [invited["invitation"]["id"]]
    assert token not in listed.text

    reply = accept(gateway, token, "grace hopper compiles cobol")
    assert reply.status_code == 200, reply.text
    joined = reply.json()
    assert joined["user"]["tenant_id"] == tenant.tenant_id
    assert joined["user"]["role"] == "member"
    assert joined["user"]["email"] == invited["invitation"]["email"]
    assert joined["tenant"]["id"] == tenant.tenant_id

    # Log-in picks the tenant the account was created in: the inviter's.
    pair = log_in(gateway, joined["user"]["email"], "grace hopper compiles cobol")
    grace = bearer(pair["access_token"])
    me = gateway.get("/v1/users/me", headers=grace).json()
    assert (me["tenant_id"], me["role"]) == (tenant.tenant_id, "member")
    made = gateway.post("/v1/lattices", json=LATTICE, headers=grace)
    assert made.status_code == 200, made.text
    assert made.json()["id"] in lattice_ids(gateway, tenant)
    assert gateway.get("/v1/invitations", headers=tenant.headers).json()["invitations"] == []

    # Stored as a hash only, and never written to a log.
    with psycopg.connect(stack.env["DATABASE_ADMIN_URL"]) as admin:
        rows = admin.execute(
            "SELECT token_hash, accepted_at IS NOT NULL FROM invitations WHERE id = %s",
            (invited["invitation"]["id"],),
        ).fetchall()
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(), True)]
    for log in stack.logs_dir.glob("*.log"):
        assert token not in log.read_text(errors="replace"), f"{log.name} holds the token"


def test_spent_revoked_expired_and_unknown_tokens_get_one_answer(
    gateway: httpx.Client, tenant: Tenant, stack: Stack
) -> None:
    spent = invite(gateway, tenant)
    assert accept(gateway, spent["token"], "first acceptance wins here").status_code == 200
    revoked = invite(gateway, tenant)
    reply = gateway.delete(f"/v1/invitations/{revoked['invitation']['id']}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    expired = invite(gateway, tenant)
    with (
        psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as admin,
        admin.transaction(),
    ):
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant.tenant_id,))
        admin.execute(
            "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE id = %s",
            (expired["invitation"]["id"],),
        )
    unknown = "inv_" + "A" * 43
    answers = []
    for token in (spent["token"], revoked["token"], expired["token"], unknown, "garbage"):
        reply = accept(gateway, token, "another passphrase entirely")
        assert_status_body(reply, 404, NOT_FOUND)
        answers.append(reply.json()["message"])
    assert len(set(answers)) == 1, answers
    assert_bad_request(accept(gateway, "", "another passphrase entirely"), "token")
    # Nobody joined through any of them.
    members = gateway.get("/v1/members", headers=tenant.headers).json()["members"]
    assert len(members) == 2


def test_revoking_is_per_tenant_and_once(gateway: httpx.Client, tenant: Tenant) -> None:
    invited = invite(gateway, tenant)
    path = f"/v1/invitations/{invited['invitation']['id']}"
    other = register_and_login(gateway)
    assert_status_body(gateway.delete(path, headers=other.headers), 404, NOT_FOUND)
    assert gateway.delete(path, headers=tenant.headers).status_code == 200
    assert_status_body(gateway.delete(path, headers=tenant.headers), 404, NOT_FOUND)
    assert_bad_request(gateway.delete("/v1/invitations/nope", headers=tenant.headers), "id")


def test_a_new_invitation_replaces_the_pending_one_and_members_are_not_invited(
    gateway: httpx.Client, tenant: Tenant
) -> None:
    first = invite(gateway, tenant)
    email = first["invitation"]["email"]
    second = invite(gateway, tenant, email, role="admin")
    assert_status_body(accept(gateway, first["token"], "a passphrase of grace"), 404, NOT_FOUND)
    reply = accept(gateway, second["token"], "a passphrase of grace")
    assert reply.status_code == 200, reply.text
    assert reply.json()["user"]["role"] == "admin"
    again = gateway.post("/v1/invitations", json={"email": email}, headers=tenant.headers)
    assert_status_body(again, 409, ALREADY_EXISTS)
    own = gateway.post("/v1/invitations", json={"email": tenant.email}, headers=tenant.headers)
    assert_status_body(own, 409, ALREADY_EXISTS)


def test_bad_invitations_name_their_field(gateway: httpx.Client, tenant: Tenant) -> None:
    reply = gateway.post(
        "/v1/invitations", json={"email": "x@example.com", "role": "boss"}, headers=tenant.headers
    )
    assert_bad_request(reply, "role")
    reply = gateway.post("/v1/invitations", json={"email": "nope"}, headers=tenant.headers)
    assert_bad_request(reply, "email")
    invited = invite(gateway, tenant)
    assert_bad_request(accept(gateway, invited["token"]), "password")
    assert_bad_request(accept(gateway, invited["token"], "short"), "password")


def test_an_existing_account_accepts_signed_in_or_with_its_password(
    gateway: httpx.Client, tenant: Tenant
) -> None:
    bob, carol = register_and_login(gateway), register_and_login(gateway)
    for_bob = invite(gateway, tenant, bob.email)
    # Carol holds Bob's token: signed in as another address, she cannot use it.
    assert_status_body(accept(gateway, for_bob["token"], **carol.headers), 403, PERMISSION_DENIED)
    reply = accept(gateway, for_bob["token"], **bob.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["user"]["tenant_id"] == tenant.tenant_id
    assert_status_body(accept(gateway, for_bob["token"], **bob.headers), 404, NOT_FOUND)

    for_carol = invite(gateway, tenant, carol.email)
    wrong = accept(gateway, for_carol["token"], "not carols password at all")
    assert_status_body(wrong, 401, UNAUTHENTICATED)
    assert accept(gateway, for_carol["token"], carol.password).status_code == 200
    again = invite(gateway, register_and_login(gateway), carol.email)
    assert accept(gateway, again["token"], carol.password).status_code == 200
    emails = {
        m["email"] for m in gateway.get("/v1/members", headers=tenant.headers).json()["members"]
    }
    assert emails == {tenant.email, bob.email, carol.email}


# ------------------------------------------------------------------------ two tenants
def test_a_user_in_two_tenants_sees_each_only_with_its_own_token(
    gateway: httpx.Client, tenant: Tenant
) -> None:
    bob = register_and_login(gateway)
    own = gateway.post("/v1/lattices", json=LATTICE, headers=bob.headers).json()["id"]
    shared = gateway.post("/v1/lattices", json=LATTICE, headers=tenant.headers).json()["id"]
    assert (
        accept(gateway, invite(gateway, tenant, bob.email)["token"], **bob.headers).status_code
        == 200
    )

    # Log-in still picks Bob's own tenant; the list marks it.
    assert log_in(gateway, bob.email, bob.password)["access_token"]
    mine = gateway.get("/v1/users/me/tenants", headers=bob.headers).json()["memberships"]
    assert {(m["tenant"]["id"], m["role"], m["is_default"]) for m in mine} == {
        (bob.tenant_id, "owner", True),
        (tenant.tenant_id, "member", False),
    }
    switched = gateway.post(
        "/v1/auth/switch-tenant", json={"tenant_id": tenant.tenant_id}, headers=bob.headers
    )
    assert switched.status_code == 200, switched.text
    in_team = bearer(switched.json()["access_token"])
    by_login = bearer(log_in(gateway, bob.email, bob.password, tenant.tenant_id)["access_token"])

    for team_token in (in_team, by_login):
        assert lattice_ids(gateway, team_token) == {shared}
        assert_status_body(gateway.get(f"/v1/lattices/{own}", headers=team_token), 404, NOT_FOUND)
        me = gateway.get("/v1/users/me", headers=team_token).json()
        assert (me["tenant_id"], me["role"]) == (tenant.tenant_id, "member")
    assert lattice_ids(gateway, bob) == {own}
    assert_status_body(gateway.get(f"/v1/lattices/{shared}", headers=bob.headers), 404, NOT_FOUND)
    # The team's refresh token stays in the team.
    refreshed = gateway.post(
        "/v1/auth/refresh", json={"refresh_token": switched.json()["refresh_token"]}
    )
    assert lattice_ids(gateway, bearer(refreshed.json()["access_token"])) == {shared}

    stranger = register_and_login(gateway)
    for body, headers in (
        ({"tenant_id": stranger.tenant_id}, bob.headers),
        ({"tenant_id": str(uuid.uuid4())}, bob.headers),
    ):
        reply = gateway.post("/v1/auth/switch-tenant", json=body, headers=headers)
        assert_status_body(reply, 404, NOT_FOUND)
    reply = gateway.post(
        "/v1/auth/login",
        json={"email": bob.email, "password": bob.password, "tenant_id": stranger.tenant_id},
    )
    assert_status_body(reply, 404, NOT_FOUND)
    reply = gateway.post("/v1/auth/switch-tenant", json={"tenant_id": "x"}, headers=bob.headers)
    assert_bad_request(reply, "tenant_id")


# ---------------------------------------------------------------------------- roles
def test_a_role_change_holds_from_the_next_call(gateway: httpx.Client, tenant: Tenant) -> None:
    grace = join(gateway, tenant)
    grace_id = user_id(gateway, grace)
    refused = gateway.post("/v1/webhooks", json=WEBHOOK, headers=grace.headers)
    assert_status_body(refused, 403, PERMISSION_DENIED)
    assert "admin" in refused.json()["message"]

    path = f"/v1/members/{grace_id}"
    reply = gateway.patch(path, json={"role": "admin"}, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["role"] == "admin"
    # The same token, issued as a member, now acts as an admin.
    assert gateway.post("/v1/webhooks", json=WEBHOOK, headers=grace.headers).status_code == 200
    assert gateway.get("/v1/users/me", headers=grace.headers).json()["role"] == "admin"

    assert gateway.patch(path, json={"role": "member"}, headers=tenant.headers).status_code == 200
    refused = gateway.post("/v1/webhooks", json=WEBHOOK, headers=grace.headers)
    assert_status_body(refused, 403, PERMISSION_DENIED)
    assert_bad_request(gateway.patch(path, json={"role": "root"}, headers=tenant.headers), "role")
    assert_bad_request(
        gateway.patch("/v1/members/me", json={"role": "admin"}, headers=tenant.headers), "user_id"
    )


def test_a_removed_member_is_locked_out_at_once(gateway: httpx.Client, tenant: Tenant) -> None:
    grace = join(gateway, tenant, role="admin")
    grace_id = user_id(gateway, grace)
    refresh = log_in(gateway, grace.email, grace.password)["refresh_token"]
    key = gateway.post("/v1/api-keys", json={"name": "grace's"}, headers=grace.headers)
    assert key.status_code == 200, key.text
    by_key = {"x-api-key": key.json()["key"]}
    pending = invite(gateway, grace)
    assert lattice_ids(gateway, by_key) == set()

    reply = gateway.delete(f"/v1/members/{grace_id}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text

    for route in ("/v1/lattices", "/v1/webhooks", "/v1/users/me", "/v1/members"):
        assert_status_body(gateway.get(route, headers=grace.headers), 401, UNAUTHENTICATED)
        assert_status_body(gateway.get(route, headers=by_key), 401, UNAUTHENTICATED)
    reply = gateway.post("/v1/auth/refresh", json={"refresh_token": refresh})
    assert_status_body(reply, 401, UNAUTHENTICATED)
    # The invitation Grace sent went with her; so did her membership, and she had no other.
    assert_status_body(accept(gateway, pending["token"], "a fine passphrase"), 404, NOT_FOUND)
    members = gateway.get("/v1/members", headers=tenant.headers).json()["members"]
    assert grace_id not in {m["user_id"] for m in members}
    reply = gateway.post("/v1/auth/login", json={"email": grace.email, "password": grace.password})
    assert_status_body(reply, 400, FAILED_PRECONDITION)
    assert_status_body(
        gateway.delete(f"/v1/members/{grace_id}", headers=tenant.headers), 404, NOT_FOUND
    )


def test_the_last_owner_stays_and_only_owners_touch_owners(
    gateway: httpx.Client, tenant: Tenant
) -> None:
    owner_id = user_id(gateway, tenant)
    mine = f"/v1/members/{owner_id}"
    reply = gateway.patch(mine, json={"role": "admin"}, headers=tenant.headers)
    assert_status_body(reply, 400, FAILED_PRECONDITION)
    assert_status_body(gateway.delete(mine, headers=tenant.headers), 400, FAILED_PRECONDITION)

    admin = join(gateway, tenant, role="admin")
    admin_id = user_id(gateway, admin)
    for reply in (
        gateway.patch(mine, json={"role": "member"}, headers=admin.headers),
        gateway.delete(mine, headers=admin.headers),
        gateway.patch(f"/v1/members/{admin_id}", json={"role": "owner"}, headers=admin.headers),
        gateway.post(
            "/v1/invitations",
            json={"email": "o@example.com", "role": "owner"},
            headers=admin.headers,
        ),
        gateway.post("/v1/api-keys", json={"name": "k", "role": "owner"}, headers=admin.headers),
    ):
        assert_status_body(reply, 403, PERMISSION_DENIED)

    # With a second owner, the first may step down, and may not be brought back by an admin.
    reply = gateway.patch(f"/v1/members/{admin_id}", json={"role": "owner"}, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    assert gateway.patch(mine, json={"role": "member"}, headers=tenant.headers).status_code == 200
    assert_status_body(
        gateway.post("/v1/webhooks", json=WEBHOOK, headers=tenant.headers), 403, PERMISSION_DENIED
    )
    reply = gateway.patch(f"/v1/members/{admin_id}", json={"role": "admin"}, headers=admin.headers)
    assert_status_body(reply, 400, FAILED_PRECONDITION)


def test_api_keys_act_with_their_role_never_above_their_creator(
    gateway: httpx.Client, tenant: Tenant
) -> None:
    reply = gateway.post(
        "/v1/api-keys", json={"name": "ops", "role": "admin"}, headers=tenant.headers
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["role"] == "admin"
    key = {"x-api-key": reply.json()["key"]}
    listed = gateway.get("/v1/api-keys", headers=tenant.headers).json()["api_keys"]
    assert [k["role"] for k in listed] == ["admin"]
    assert gateway.post("/v1/webhooks", json=WEBHOOK, headers=key).status_code == 200
    assert gateway.get("/v1/users/me", headers=key).json()["role"] == "admin"
    # Keys never manage people or keys, whatever their role.
    for reply in (
        gateway.post("/v1/invitations", json={"email": "k@example.com"}, headers=key),
        gateway.post("/v1/api-keys", json={"name": "more"}, headers=key),
    ):
        assert_status_body(reply, 403, PERMISSION_DENIED)

    # The creator demoted to member: the admin key acts as a member from the next call.
    co_owner = join(gateway, tenant, role="owner")
    me = user_id(gateway, tenant)
    patched = gateway.patch(f"/v1/members/{me}", json={"role": "member"}, headers=co_owner.headers)
    assert patched.status_code == 200, patched.text
    assert_status_body(
        gateway.post("/v1/webhooks", json=WEBHOOK, headers=key), 403, PERMISSION_DENIED
    )
    assert gateway.get("/v1/users/me", headers=key).json()["role"] == "member"
    reply = gateway.post(
        "/v1/api-keys", json={"name": "x", "role": "root"}, headers=co_owner.headers
    )
    assert_bad_request(reply, "role")
