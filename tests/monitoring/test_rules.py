"""The Prometheus rule files are valid, and their promtool unit tests pass."""

from __future__ import annotations

from tests.monitoring.tools import RULE_TESTS, RULES, run, tool


def test_rule_files_are_valid() -> None:
    files = sorted(RULES.glob("*.yml"))
    assert files
    result = run(tool("promtool"), "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    files = sorted(RULE_TESTS.glob("*.test.yml"))
    assert files
    result = run(tool("promtool"), "test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
