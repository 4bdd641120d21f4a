"""The audit commands' input: retention days and --since times."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.auth.audit_commands import AuditCommandError, parse_since, retention_days


def test_retention_is_the_option_else_the_variable_else_a_year(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AUDIT_RETENTION_DAYS", raising=False)
    assert retention_days() == 365
    monkeypatch.setenv("AUDIT_RETENTION_DAYS", "90")
    assert retention_days() == 90
    assert retention_days(30) == 30


@pytest.mark.parametrize("value", [0, -1])
def test_retention_below_a_day_is_refused(value: int) -> None:
    with pytest.raises(AuditCommandError, match="at least 1 day"):
        retention_days(value)


def test_a_retention_that_is_no_number_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_RETENTION_DAYS", "a year")
    with pytest.raises(AuditCommandError, match="AUDIT_RETENTION_DAYS='a year'"):
        retention_days()


def test_since_is_iso_8601_and_utc_without_a_zone() -> None:
    assert parse_since("2026-12-01T00:00:00Z") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_since("last tuesday")
