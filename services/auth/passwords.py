"""Password policy and argon2id hashing (OWASP ASVS parameters or stronger)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.common.errors import InvalidArgument

MIN_LENGTH = 12
MAX_LENGTH = 128

# OWASP: argon2id with at least 19 MiB of memory and 2 iterations.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)
# Verified against when the e-mail is unknown, so both failures cost the same time.
_DUMMY_HASH = _HASHER.hash("an unguessable placeholder password")


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    text = resources.files(__package__).joinpath("common_passwords.txt").read_text("utf-8")
    lines = (line.strip().lower() for line in text.splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def check_policy(password: str, email: str) -> None:
    """Raises InvalidArgument(field="password") when the password is too weak."""
    if len(password) < MIN_LENGTH:
        raise InvalidArgument("password", f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InvalidArgument("password", f"must be at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if lowered == email.lower() or lowered == email.split("@", 1)[0].lower():
        raise InvalidArgument("password", "must not be the e-mail address")
    if lowered in _common_passwords():
        raise InvalidArgument("password", "is too common; choose another")


def hash_password(password: str) -> str:
    """An argon2id hash with a fresh salt."""
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when the password matches; with no hash, spends the same time and says False."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return _HASHER.check_needs_rehash(password_hash)
