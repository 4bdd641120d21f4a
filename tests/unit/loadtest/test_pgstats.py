"""The p95 figures derived from pg_stat_statements' moments bound the true p95 from above."""

from __future__ import annotations

import random
import statistics

import pytest

from loadtest import pgstats
from loadtest.api import judge_queries
from loadtest.journeys import Window
from loadtest.scenarios import Measured


def statement(samples: list[float], query: str = "SELECT 1") -> pgstats.Statement:
    return pgstats.Statement(
        role="catalytic_app",
        query=query,
        calls=len(samples),
        rows=len(samples),
        total_ms=sum(samples),
        mean_ms=statistics.fmean(samples),
        stddev_ms=statistics.pstdev(samples),
        min_ms=min(samples),
        max_ms=max(samples),
        mean_plan_ms=0.0,
    )


def p95(samples: list[float]) -> float:
    return sorted(samples)[int(0.95 * len(samples)) - 1]


@pytest.mark.parametrize("seed", range(5))
def test_the_bound_is_above_the_p95_of_skewed_times(seed: int) -> None:
    rng = random.Random(seed)
    # Query times: mostly fast, a long right tail (log-normal), plus rare stalls.
    samples = [rng.lognormvariate(-2.0, 0.8) for _ in range(5000)]
    samples += [rng.uniform(5, 20) for _ in range(20)]
    s = statement(samples)
    assert s.p95_bound_ms >= p95(samples)
    assert s.p95_bound_ms <= s.max_ms


def test_the_overall_bound_covers_every_call_together() -> None:
    rng = random.Random(7)
    fast = [rng.lognormvariate(-3.0, 0.5) for _ in range(20000)]
    slow = [rng.lognormvariate(0.0, 0.3) for _ in range(500)]
    statements = [statement(fast, "fast"), statement(slow, "slow")]
    bound = pgstats.overall_p95_bound_ms(statements)
    assert bound >= p95(fast + slow)
    # Far tighter than the slow statement's own bound: it is 2.4% of the calls.
    assert bound < statements[1].p95_bound_ms
    assert pgstats.share_above(statements, bound) <= 0.05


def test_constant_times() -> None:
    s = statement([0.25] * 100)
    assert s.p95_bound_ms == pytest.approx(0.25)
    assert pgstats.overall_p95_bound_ms([s]) == pytest.approx(0.25, abs=0.002)


def test_worst_skips_rare_statements() -> None:
    rare = statement([50.0] * 3, "rare")
    common = statement([0.1, 0.2] * 50, "common")
    assert pgstats.worst([rare, common]) == common


def test_the_suite_judges_the_seeds_query_times_against_both_targets() -> None:
    fast = statement([0.1, 0.2] * 50, "SELECT fast")
    slow = statement([4.0, 30.0] * 50, "SELECT slow")
    assert judge_queries(Measured(Window("seed"), {}, {})) == []  # without --pg-stats
    bar, ours = judge_queries(Measured(Window("seed"), {}, {}, [fast]))
    assert bar.met
    assert ours.met
    bar, ours = judge_queries(Measured(Window("seed"), {}, {}, [fast, slow]))
    assert bar.met
    assert not ours.met
    assert "SELECT slow" in ours.why
