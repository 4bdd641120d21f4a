"""The migration runner's rules that need no database: names, order, checksums, drift."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from services.common.migrate import (
    Applied,
    MigrationError,
    checksum,
    discover,
    main,
    pending,
    status_lines,
    wait_for_current,
)

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _write(directory: Path, **files: str) -> None:
    for name, text in files.items():
        (directory / name).write_text(text)


def _applied(path: Path) -> Applied:
    name = path.name[5:-4]
    return Applied(int(path.name[:4]), name, checksum(path.read_bytes()), WHEN)


def test_discover_orders_by_version_and_ignores_other_files(tmp_path: Path) -> None:
    _write(
        tmp_path,
        **{
            "0010_webhooks.sql": "select 10;",
            "0002_lattices.sql": "select 2;",
            "0001_init.sql": "select 1;",
            "README.md": "docs",
        },
    )
    found = discover(tmp_path)
    assert [m.filename for m in found] == [
        "0001_init.sql",
        "0002_lattices.sql",
        "0010_webhooks.sql",
    ]
    assert [m.version for m in found] == [1, 2, 10]
    assert found[0].sql == b"select 1;"


@pytest.mark.parametrize(
    "bad", ["1_init.sql", "0001-init.sql", "0001_Init.sql", "00001_init.sql", "0001_.sql", "x.sql"]
)
def test_discover_rejects_bad_names(tmp_path: Path, bad: str) -> None:
    _write(tmp_path, **{bad: "select 1;"})
    with pytest.raises(MigrationError, match=re.escape(bad)):
        discover(tmp_path)


def test_discover_rejects_duplicate_versions(tmp_path: Path) -> None:
    _write(tmp_path, **{"0003_users.sql": "", "0003_tokens.sql": ""})
    with pytest.raises(MigrationError, match="0003"):
        discover(tmp_path)


def test_discover_needs_the_directory(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        discover(tmp_path / "nope")


def test_checksum_ignores_line_ending_style_only() -> None:
    assert checksum(b"select 1;\nselect 2;\n") == checksum(b"select 1;\r\nselect 2;\r\n")
    assert checksum(b"select 1;") != checksum(b"select 2;")


def test_pending_skips_applied_and_keeps_order(tmp_path: Path) -> None:
    _write(tmp_path, **{"0001_init.sql": "a", "0002_more.sql": "b", "0003_last.sql": "c"})
    found = discover(tmp_path)
    applied = {2: _applied(tmp_path / "0002_more.sql")}
    assert [m.version for m in pending(found, applied)] == [1, 3]
    all_applied = {m.version: _applied(tmp_path / m.filename) for m in found}
    assert pending(found, all_applied) == []


def test_pending_refuses_a_changed_applied_file(tmp_path: Path) -> None:
    _write(tmp_path, **{"0001_init.sql": "create table a ();"})
    applied = {1: _applied(tmp_path / "0001_init.sql")}
    _write(tmp_path, **{"0001_init.sql": "create table b ();"})
    with pytest.raises(MigrationError, match=r"0001_init\.sql changed"):
        pending(discover(tmp_path), applied)


def test_status_lines(tmp_path: Path) -> None:
    _write(tmp_path, **{"0001_init.sql": "a", "0002_more.sql": "b"})
    applied = {
        1: _applied(tmp_path / "0001_init.sql"),
        7: Applied(7, "gone", "0" * 64, WHEN),
    }
    lines = status_lines(discover(tmp_path), applied)
    assert lines == [
        "0001_init.sql  applied 2025-01-02 03:04:05",
        "0002_more.sql  pending",
        "0007_gone.sql  applied, but no such file here",
    ]


def test_main_needs_a_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_ADMIN_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["--status"]) == 2


def test_main_reports_bad_files_before_connecting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_ADMIN_URL", "postgresql://admin:pw@127.0.0.1:1/none")
    _write(tmp_path, **{"7_bad.sql": ""})
    assert main(["--dir", str(tmp_path)]) == 1
    assert "7_bad.sql" in capsys.readouterr().err


class _Clock:
    """A fake monotonic clock that `sleep` advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _wait(directory: Path, reads: list[object], clock: _Clock, timeout_s: float = 10.0) -> str:
    """Runs wait_for_current with `reads` as the successive answers (an exception is raised)."""

    def read() -> dict[int, Applied]:
        answer = reads.pop(0) if len(reads) > 1 else reads[0]
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, dict)
        return answer

    out = io.StringIO()
    wait_for_current(
        read,
        directory,
        timeout_s=timeout_s,
        interval_s=2.0,
        out=out,
        sleep=clock.sleep,
        clock=clock,
    )
    return out.getvalue()


def test_wait_for_current_returns_once_every_file_is_applied(tmp_path: Path) -> None:
    _write(tmp_path, **{"0001_init.sql": "select 1;", "0002_more.sql": "select 2;"})
    first, second = sorted(tmp_path.glob("*.sql"))
    clock = _Clock()
    unreachable = psycopg.OperationalError("connection refused")
    output = _wait(
        tmp_path,
        [unreachable, {}, {1: _applied(first)}, {1: _applied(first), 2: _applied(second)}],
        clock,
    )
    assert clock.sleeps == [2.0, 2.0, 2.0]
    assert output.splitlines()[-1] == "schema is current"
    assert "waiting for 0002_more.sql" in output


def test_wait_for_current_accepts_a_newer_schema(tmp_path: Path) -> None:
    _write(tmp_path, **{"0001_init.sql": "select 1;"})
    (path,) = tmp_path.glob("*.sql")
    newer = Applied(2, "later", "0" * 64, WHEN)
    clock = _Clock()
    _wait(tmp_path, [{1: _applied(path), 2: newer}], clock)
    assert clock.sleeps == []


def test_wait_for_current_times_out_naming_what_is_missing(tmp_path: Path) -> None:
    _write(tmp_path, **{"0001_init.sql": "select 1;"})
    clock = _Clock()
    with pytest.raises(MigrationError, match=r"after 5 s: waiting for 0001_init\.sql"):
        _wait(tmp_path, [{}], clock, timeout_s=5.0)
    assert clock.now >= 5.0


def test_wait_for_current_fails_at_once_on_a_changed_file(tmp_path: Path) -> None:
    _write(tmp_path, **{"0001_init.sql": "select 1;"})
    changed = Applied(1, "init", "0" * 64, WHEN)
    clock = _Clock()
    with pytest.raises(MigrationError, match="changed after it was applied"):
        _wait(tmp_path, [{1: changed}], clock)
    assert clock.sleeps == []


def test_wait_for_current_needs_a_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_ADMIN_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["--wait-for-current", "--timeout", "1"]) == 2
