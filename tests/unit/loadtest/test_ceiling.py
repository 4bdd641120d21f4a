"""loadtest: a run with errors never counts as a ceiling."""

from __future__ import annotations

import time

from loadtest.report import Result, ceiling_rps
from loadtest.rest import ceiling_verdict


def run(name: str, ok: int, total_s: float = 10.0, **statuses: int) -> Result:
    result = Result(name, time.time(), total_s=total_s)
    for _ in range(ok):
        result.add(1_000_000, 200)
    for status, count in statuses.items():
        for _ in range(count):
            result.add(1_000_000, int(status.removeprefix("s")))
    return result


def test_a_clean_run_is_a_ceiling_at_its_rate() -> None:
    assert ceiling_rps(run("ceiling", 15_000)) == 1_500.0


def test_refusals_by_the_gateway_backstop_make_the_run_no_ceiling() -> None:
    # The run the issue reports: most of the "14,823 req/s" were the backstop's 429s.
    flooded = run("ceiling", 21_927, s429=126_303)
    assert ceiling_rps(flooded) is None


def test_one_transport_error_is_enough() -> None:
    result = run("ceiling", 15_000)
    result.add(0, None, error="ConnectionResetError")
    assert ceiling_rps(result) is None


def test_an_empty_run_is_no_ceiling() -> None:
    assert ceiling_rps(run("ceiling", 0)) is None
    assert ceiling_rps(run("ceiling", 10, total_s=0.0)) is None


def test_the_share_of_an_invalid_ceiling_fails_and_says_why() -> None:
    get = run("rest", 8_000)
    _, ok, why = ceiling_verdict(get, run("ceiling", 21_927, s429=126_303))
    assert not ok
    assert "invalid" in why
    assert "126303 of 148230" in why


def test_the_share_of_a_valid_ceiling_is_judged() -> None:
    text, ok, _ = ceiling_verdict(run("rest", 8_000), run("ceiling", 10_000))
    assert ok
    assert text.startswith("80% of ceiling")
