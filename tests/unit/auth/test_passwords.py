"""Password policy and argon2id hashing."""

import pytest

from services.auth import passwords
from services.common.errors import InvalidArgument


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "too short"),
        ("x" * 129, "too long"),
        ("ada@example.com", "equal to the e-mail"),
        ("Password1234", "common"),
        ("qwertyuiop123", "common"),
    ],
)
def test_weak_passwords_are_refused_naming_the_field(password: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        passwords.check_policy(password, "ada@example.com")
    assert info.value.field == "password", reason


def test_a_reasonable_password_passes() -> None:
    passwords.check_policy("correct horse battery staple", "ada@example.com")


def test_hash_is_argon2id_with_owasp_parameters_and_verifies() -> None:
    hashed = passwords.hash_password("correct horse battery staple")
    assert hashed.startswith("$argon2id$")
    assert "m=19456,t=2,p=1" in hashed
    assert passwords.verify_password(hashed, "correct horse battery staple")
    assert not passwords.verify_password(hashed, "correct horse battery stapler")
    assert not passwords.needs_rehash(hashed)


def test_unknown_user_verifies_false_against_the_dummy_hash() -> None:
    assert not passwords.verify_password(None, "an unguessable placeholder password")


def test_weaker_hash_needs_rehash() -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("pw")
    assert passwords.needs_rehash(weak)
