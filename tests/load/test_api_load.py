"""The seed's load suite: virtual users on real journeys through the gateway.

Run by `make loadtest` (never by `make test`: pyproject's addopts ignore tests/load). It runs
the seed, capacity and fairness scenarios of `loadtest/api.py` (each on a private stack), prints
the summary table with every target met or not and why, and fails only on the seed's gate: p95
under 500 ms and not one error. `LOADTEST_ARGS` passes options on (`--quick`, `--only seed`).
"""

from __future__ import annotations

import os
import shlex

import pytest

from loadtest import api


@pytest.mark.timeout(3600)
def test_seed_journeys_hold_p95_under_500_ms_without_errors() -> None:
    options = api.parse_args(shlex.split(os.environ.get("LOADTEST_ARGS", "")))
    suite = api.run_suite(options)
    if "seed" not in options.only:
        pytest.skip(f"--only {','.join(options.only)}: the seed's gate was not run")
    assert suite.seed_gate, suite.seed_gate_why
