"""API keys: format, parsing, hashing, and the verifier's refusals and cache (fake database)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.common.api_keys import (
    CACHE_TTL_S,
    KEY_LENGTH,
    ApiKeyVerifier,
    generate_api_key,
    hash_api_key,
    hashes_match,
    parse_api_key,
)
from services.common.errors import Unauthenticated

TENANT = str(uuid.uuid4())
USER = str(uuid.uuid4())
KEY_ID = str(uuid.uuid4())


def test_generated_keys_have_the_documented_shape() -> None:
    generated = generate_api_key()
    assert len(generated.key) == KEY_LENGTH
    assert generated.key.startswith(f"cat_{generated.prefix}_")
    assert len(generated.prefix) == 12
    assert set(generated.prefix) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert parse_api_key(generated.key) == generated.prefix
    assert generated.secret_hash == hashlib.sha256(generated.key.encode()).hexdigest()
    assert generated.key not in repr(generated)


def test_generated_keys_differ() -> None:
    keys = {generate_api_key().key for _ in range(200)}
    prefixes = {key[4:16] for key in keys}
    assert len(keys) == len(prefixes) == 200


def _good() -> str:
    return generate_api_key().key


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: "",
        lambda k: k[:16],  # prefix only: "any string starting with the prefix"
        lambda k: k[:17],
        lambda k: k[:-1],  # secret one character short
        lambda k: k + "A",  # one character long
        lambda k: k + "\n",
        lambda k: " " + k[1:],
        lambda k: "CAT" + k[3:],
        lambda k: "cak" + k[3:],
        lambda k: k[:4] + k[4:16].upper() + k[16:],  # prefix outside base32 lower-case
        lambda k: k[:4] + "0" + k[5:],  # 0 is not base32
        lambda k: k[:16] + "-" + k[17:],  # wrong separator
        lambda k: k[:20] + "+" + k[21:],  # not base64url
        lambda k: k[:20] + "=" + k[21:],
        lambda k: k[:20] + "é" + k[21:],
        lambda k: "Bearer " + k,
    ],
)
def test_malformed_keys_do_not_parse(mangle: Any) -> None:
    assert parse_api_key(mangle(_good())) is None


def test_hash_comparison() -> None:
    key = _good()
    other = _good()
    assert hashes_match(hash_api_key(key), hash_api_key(key))
    assert not hashes_match(hash_api_key(key), hash_api_key(other))
    assert len(hash_api_key(key)) == 64


# ------------------------------------------------------------------ the verifier, on fakes
@dataclass
class FakeCursor:
    row: dict[str, Any] | None

    async def fetchone(self) -> dict[str, Any] | None:
        return self.row


@dataclass
class FakeConnection:
    rows: dict[str, dict[str, Any]]
    statements: list[str] = field(default_factory=list)

    async def execute(self, query: str, params: tuple[Any, ...] = ()) -> FakeCursor:
        self.statements.append(query)
        if query.startswith("SELECT id::text"):
            return FakeCursor(self.rows.get(params[1]))
        return FakeCursor(None)


@dataclass
class FakeDatabase:
    """Just enough of services.common.db.Database for ApiKeyVerifier."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    lookups: list[dict[str, str]] = field(default_factory=list)
    conn: FakeConnection | None = None

    @asynccontextmanager
    async def lookup_transaction(self, **lookups: str) -> AsyncIterator[FakeConnection]:
        self.lookups.append(lookups)
        self.conn = FakeConnection(self.rows)
        yield self.conn

    def add(self, key: str, *, revoked: bool = False, stale: bool = False) -> None:
        prefix = parse_api_key(key)
        assert prefix is not None
        self.rows[prefix] = {
            "id": KEY_ID,
            "tenant_id": TENANT,
            "user_id": USER,
            "role": "member",
            "secret_hash": hash_api_key(key),
            "revoked": revoked,
            "stale": stale,
            # Used before: a first use is recorded on the audit trail (tests/e2e/test_audit_trail).
            "unused": False,
        }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier(db: FakeDatabase, clock: Clock | None = None) -> ApiKeyVerifier:
    return ApiKeyVerifier(db, clock=clock or Clock())  # type: ignore[arg-type]


async def test_a_valid_key_names_its_creator_tenant_and_role() -> None:
    db = FakeDatabase()
    key = _good()
    db.add(key)
    principal = await verifier(db).verify(key)
    assert (principal.user_id, principal.tenant_id, principal.role) == (USER, TENANT, "member")
    assert principal.auth_method == "api_key"
    assert principal.api_key_id == KEY_ID
    assert db.lookups == [{"api_key_prefix": key[4:16]}]


async def test_malformed_keys_are_refused_without_a_lookup() -> None:
    db = FakeDatabase()
    key = _good()
    db.add(key)
    for bad in (key[:16], key[:16] + "x" * 10, key + "x", "cat_", "anything"):
        with pytest.raises(Unauthenticated):
            await verifier(db).verify(bad)
    assert db.lookups == []


async def test_right_prefix_wrong_secret_is_refused() -> None:
    db = FakeDatabase()
    key = _good()
    db.add(key)
    forged = key[:17] + generate_api_key().key[17:]
    assert parse_api_key(forged) == key[4:16]
    with pytest.raises(Unauthenticated):
        await verifier(db).verify(forged)


async def test_revoked_and_unknown_keys_are_refused() -> None:
    db = FakeDatabase()
    revoked = _good()
    db.add(revoked, revoked=True)
    for key in (revoked, _good()):
        with pytest.raises(Unauthenticated):
            await verifier(db).verify(key)


async def test_successes_are_cached_for_at_most_the_ttl_and_failures_never() -> None:
    db = FakeDatabase()
    clock = Clock()
    check = verifier(db, clock)
    key = _good()
    db.add(key)
    await check.verify(key)
    await check.verify(key)
    assert len(db.lookups) == 1
    clock.now += CACHE_TTL_S + 0.1
    await check.verify(key)
    assert len(db.lookups) == 2
    unknown = _good()
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await check.verify(unknown)
    assert len(db.lookups) == 4


async def test_last_used_is_written_only_when_stale() -> None:
    db = FakeDatabase()
    fresh, stale = _good(), _good()
    db.add(fresh)
    await verifier(db).verify(fresh)
    assert db.conn is not None
    assert not any(s.startswith("UPDATE") for s in db.conn.statements)
    db.add(stale, stale=True)
    await verifier(db).verify(stale)
    assert any(s.startswith("UPDATE api_keys SET last_used_at") for s in db.conn.statements)
