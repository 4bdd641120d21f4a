"""to_timestamp agrees with protobuf's own FromDatetime, before and after the epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.timestamps import to_timestamp


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 6, 3, 1, 2, 345678, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 6, 1, 12, 0, 0, 1),  # naive: taken as UTC
        datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_the_same_as_from_datetime(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    assert to_timestamp(value) == expected


def test_none_stays_none() -> None:
    assert to_timestamp(None) is None
