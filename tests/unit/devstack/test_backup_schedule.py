"""The backup schedule of `make up BACKUP=1` (devstack.backup.due_backup)."""

from __future__ import annotations

from devstack.backup import BackupSet, due_backup

HOUR, DAY = 3600.0, 86400.0


def backup(kind: str, stopped: float) -> BackupSet:
    return BackupSet("label", kind, stopped - 5, stopped, 1, 1)


def due(sets: list[BackupSet], now: float) -> str | None:
    return due_backup(sets, now, interval_s=HOUR, full_every_s=7 * DAY)


def test_no_backup_yet_means_a_full_one() -> None:
    assert due([], 1000.0) == "full"


def test_an_incremental_once_the_newest_backup_is_an_interval_old() -> None:
    sets = [backup("full", 0.0), backup("incr", 2 * HOUR)]
    assert due(sets, 2 * HOUR + HOUR - 1) is None
    assert due(sets, 3 * HOUR) == "incr"


def test_a_full_one_when_the_newest_full_is_a_week_old_even_with_fresh_incrementals() -> None:
    sets = [backup("full", 0.0), backup("incr", 7 * DAY - 60)]
    assert due(sets, 7 * DAY - 1) is None
    assert due(sets, 7 * DAY) == "full"


def test_only_incrementals_left_means_a_full_one() -> None:
    """Retention expired the full backups: the next backup must be full."""
    assert due([backup("incr", 100.0)], 200.0) == "full"
