"""API keys: their format, their hash, and verification of `x-api-key` against PostgreSQL.

A key is `cat_<prefix>_<secret>`: `prefix` is 12 random base32 characters (60 bits, public,
shown in listings, unique, the look-up handle), `secret` is 32 random bytes in base64url
(43 characters). Only the SHA-256 of the whole key is stored. Anything that does not match the
format exactly is refused before any look-up, so a string that merely starts like a key never
passes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common import audit
from services.common.context import AUTH_METHOD_API_KEY, Principal
from services.common.db import Database
from services.common.errors import Unauthenticated

KEY_PREFIX = "cat_"
PREFIX_LENGTH = 12
SECRET_BYTES = 32
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_FORMAT = re.compile(r"cat_([a-z2-7]{12})_([A-Za-z0-9_-]{43})")
KEY_LENGTH = len(KEY_PREFIX) + PREFIX_LENGTH + 1 + 43

# A revoked key keeps working from a verifier's cache for at most this long when the Redis
# revocation marker (denylist.Denylist.add_api_key) is missing; with it, not at all.
CACHE_TTL_S = 30.0
MAX_CACHE_ENTRIES = 10_000
# last_used_at is written at most this often per key, so busy keys do not write on every call.
TOUCH_INTERVAL_S = 60
INVALID_API_KEY = "API key is invalid or revoked"


@dataclass(frozen=True)
class NewApiKey:
    """A freshly generated key: `key` is shown to its creator once and never stored."""

    prefix: str
    secret_hash: str
    key: str = field(repr=False)


def hash_api_key(key: str) -> str:
    """SHA-256 hex of the whole key; no salt or stretching needed for 256 random bits."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_api_key() -> NewApiKey:
    """A new random key in the `cat_<prefix>_<secret>` format."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return NewApiKey(prefix=prefix, secret_hash=hash_api_key(key), key=key)


def parse_api_key(key: str) -> str | None:
    """The key's prefix when `key` is exactly well-formed, else None."""
    if len(key) != KEY_LENGTH:
        return None
    match = _FORMAT.fullmatch(key)
    return match.group(1) if match else None


def hashes_match(presented_hash: str, stored_hash: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(presented_hash.encode("ascii"), stored_hash.encode("ascii"))


class ApiKeyVerifier:
    """Turns an `x-api-key` value into the Principal of the key, or Unauthenticated.

    Successful verifications are cached in-process for `cache_ttl_s`, keyed by the key's
    SHA-256 (only the holder of the key can produce it); failures are never cached.
    """

    def __init__(
        self,
        database: Database,
        *,
        cache_ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = database
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def verify(self, key: str) -> Principal:
        """The key's Principal: its creator, tenant and role, with auth_method "api_key"."""
        prefix = parse_api_key(key)
        if prefix is None:
            raise Unauthenticated(INVALID_API_KEY)
        digest = hash_api_key(key)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = await self._look_up(prefix, digest)
        self._remember(digest, principal, now)
        return principal

    def _remember(self, digest: str, principal: Principal, now: float) -> None:
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            live = {k: v for k, v in self._cache.items() if v[0] > now}
            # Still full of live entries: start afresh rather than grow without bound.
            self._cache = live if len(live) < MAX_CACHE_ENTRIES else {}
        self._cache[digest] = (now + self._cache_ttl_s, principal)

    async def _look_up(self, prefix: str, digest: str) -> Principal:
        # The api_keys_lookup policy admits exactly the row with this prefix; a database that is
        # down is Unavailable (Database maps it), never a refused key.
        async with self._db.lookup_transaction(api_key_prefix=prefix) as conn:
            cur = await conn.execute(
                "SELECT id::text, tenant_id::text, user_id::text, role, secret_hash,"
                " revoked_at IS NOT NULL AS revoked,"
                " (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => %s))"
                " AS stale, last_used_at IS NULL AS unused FROM api_keys WHERE prefix = %s",
                (TOUCH_INTERVAL_S, prefix),
            )
            row = await cur.fetchone()
            if row is None or not hashes_match(digest, row["secret_hash"]) or row["revoked"]:
                raise Unauthenticated(INVALID_API_KEY)
            if row["stale"]:
                # The look-up policy is read-only: writing needs the key's tenant context.
                await conn.execute(
                    "SELECT set_config('app.tenant_id', %s, true)", (row["tenant_id"],)
                )
                cur = await conn.execute(
                    "UPDATE api_keys SET last_used_at = now() WHERE id = %s"
                    " AND (last_used_at IS NULL"
                    " OR last_used_at < now() - make_interval(secs => %s))"
                    " RETURNING true",
                    (row["id"], TOUCH_INTERVAL_S),
                )
                # Its first use, once: two services racing on it update one row; one wins.
                if row["unused"] and await cur.fetchone() is not None:
                    await audit.record(
                        conn,
                        row["tenant_id"],
                        audit.AuditEvent(
                            "api_key.first_use", "api_key", row["id"], details={"prefix": prefix}
                        ),
                        actor=audit.Actor("api_key", prefix),
                    )
        return Principal(
            user_id=row["user_id"],
            tenant_id=row["tenant_id"],
            role=row["role"],
            auth_method=AUTH_METHOD_API_KEY,
            api_key_id=row["id"],
            api_key_prefix=prefix,
        )
