"""Page sizes and opaque page tokens."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.common.errors import InvalidArgument
from services.common.paging import Cursor, decode_page_token, encode_page_token, page_size


@pytest.mark.parametrize(("requested", "expected"), [(0, 20), (1, 1), (57, 57), (100, 100)])
def test_page_size(requested: int, expected: int) -> None:
    assert page_size(requested) == expected


@pytest.mark.parametrize("requested", [-1, 101, 2**31 - 1])
def test_bad_page_size_names_the_field(requested: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_size(requested)
    assert caught.value.field == "page_size"


@pytest.mark.parametrize(
    "created_at",
    [
        datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_token_round_trip(created_at: datetime) -> None:
    cursor = Cursor(created_at=created_at, id=str(uuid.uuid4()))
    token = encode_page_token(cursor)
    assert token.replace("-", "").replace("_", "").isalnum()
    assert decode_page_token(token) == cursor


def test_empty_token_is_the_first_page() -> None:
    assert decode_page_token("") is None


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        "!!!!",
        "a",
        "x" * 300,
        _b64("[]"),
        _b64('"text"'),
        _b64("{}"),
        _b64('{"t": "2026-01-01T00:00:00+00:00"}'),
        _b64('{"t": "yesterday", "i": "' + str(uuid.uuid4()) + '"}'),
        _b64('{"t": "2026-01-01T00:00:00+00:00", "i": "not-a-uuid"}'),
        _b64('{"t": "2026-01-01T00:00:00+00:00", "i": 7}'),
        # A naive time cannot be compared with timestamptz unambiguously.
        _b64('{"t": "2026-01-01T00:00:00", "i": "' + str(uuid.uuid4()) + '"}'),
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
    ],
)
def test_bad_tokens_name_the_field(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token)
    assert caught.value.field == "page_token"
