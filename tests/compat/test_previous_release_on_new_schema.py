"""Release N-1, its own code and tests from git history, passes on this checkout's schema N.

Migrations only expand so that the previous release keeps serving while they are applied and
after a rollback (ADR 52, migrations/README.md). Here N-1's tree (tests/compat/previous_release)
gets this checkout's migrations/, its own harness starts a local stack and migrates a fresh
database to schema N, and N-1's smoke suite and integration tests run against it.

COMPAT_BASE_REF=<ref> plays another commit as N-1 (a release tag); COMPAT_TESTS='<paths>' runs
other test paths of it; COMPAT_REQUIRED=1 (set by CI) fails where a checkout without history
would skip.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from services.common.migrate import discover
from tests.compat.previous_release import (
    DEFAULT_SUITES,
    Baseline,
    CompatSetupError,
    HistoryUnavailable,
    RunResult,
    check_imports_from,
    choose_baseline,
    exceptions,
    prepare,
    run_suites,
    summary,
)

pytestmark = [pytest.mark.e2e, pytest.mark.compat]

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO / "migrations"
# About a minute on two cores; the bound is for a baseline whose stack hangs.
RUN_TIMEOUT_S = 480


def _log(line: str) -> None:
    print(f"[compat] {line}", file=sys.stderr, flush=True)


def _baseline() -> Baseline:
    try:
        return choose_baseline(REPO, MIGRATIONS, os.environ.get("COMPAT_BASE_REF") or None)
    except HistoryUnavailable as exc:
        reason = f"release N-1 is not available from git history: {exc}"
        if os.environ.get("COMPAT_REQUIRED") == "1":
            pytest.fail(f"{reason} (COMPAT_REQUIRED=1: CI needs a full clone)", pytrace=False)
        _log(f"skipped: {reason}")
        pytest.skip(reason)
    except CompatSetupError as exc:
        pytest.fail(str(exc), pytrace=False)


def _failure_message(baseline: Baseline, result: RunResult, workspace: Path) -> str:
    schema = discover(MIGRATIONS)
    lines = [
        f"release N-1 ({baseline.short}, {baseline.why}) fails its own tests on schema N "
        f"({schema[0].filename} .. {schema[-1].filename} of this checkout):",
        *(f"  {line}" for line in summary(result.output)),
    ]
    raised = exceptions(result.output, result.logs_dir)
    if raised:
        lines += ["raised in its tests and services:", *(f"  {line}" for line in raised)]
    lines += [
        f"its tree, whole output (compat.log) and stack logs: {workspace}",
        "Either a migration breaks release N-1 (expand now, contract in a later release: "
        "migrations/README.md), or an N-1 test forbids what a migration grants on purpose "
        "(then list it in DESELECTED in tests/compat/previous_release.py, with the reason).",
    ]
    return "\n".join(lines)


@pytest.mark.timeout(RUN_TIMEOUT_S + 180)
def test_previous_release_passes_its_tests_on_the_new_schema() -> None:
    baseline = _baseline()
    suites = os.environ.get("COMPAT_TESTS", "").split() or list(DEFAULT_SUITES)
    workspace = Path(tempfile.mkdtemp(prefix="catalytic-compat-"))
    keep = False
    try:
        started = time.monotonic()
        try:
            tree = prepare(REPO, MIGRATIONS, baseline, workspace)
            check_imports_from(tree)
        except CompatSetupError as exc:
            keep = True
            pytest.fail(f"{exc}\n(the baseline's tree: {workspace})", pytrace=False)
        present = [suite for suite in suites if (tree / suite).exists()]
        assert present, f"the baseline {baseline.short} has none of {', '.join(suites)}"
        _log(
            f"release N-1 is {baseline.short} ({baseline.why}); prepared in "
            f"{time.monotonic() - started:.1f} s; running its {' '.join(present)}"
        )
        started = time.monotonic()
        result = run_suites(tree, present, RUN_TIMEOUT_S)
        _log(
            f"its tests ran in {time.monotonic() - started:.1f} s, exit status {result.returncode}"
        )
        if result.returncode != 0:
            keep = True
            pytest.fail(_failure_message(baseline, result, workspace), pytrace=False)
    finally:
        if not keep:
            shutil.rmtree(workspace, ignore_errors=True)
