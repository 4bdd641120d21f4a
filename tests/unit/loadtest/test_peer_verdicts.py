"""loadtest rest: ours against the FastAPI peer (the request-path targets): throughput at least the
peer's, p99 at most 1.5 times the peer's, and no verdict from a peer run with errors."""

from __future__ import annotations

import time

from loadtest.report import Result
from loadtest.rest import path_verdicts, peer_verdicts, scipy_verdict


def run(name: str, ok: int, latency_ms: float, total_s: float = 10.0, errors: int = 0) -> Result:
    result = Result(name, time.time(), total_s=total_s)
    for _ in range(ok):
        result.add(round(latency_ms * 1e6), 200)
    for _ in range(errors):
        result.add(0, None, error="ConnectionResetError")
    return result


def test_as_fast_as_the_peer_passes_both() -> None:
    verdicts = peer_verdicts(run("ours", 20_000, 30.0), run("peer", 20_000, 25.0))
    assert [ok for _, ok, _ in verdicts] == [True, True]
    assert verdicts[0][0].startswith("rps 1.00x the FastAPI peer's")


def test_slower_than_the_peer_fails_naming_the_shortfall() -> None:
    (throughput, latency) = peer_verdicts(run("ours", 10_000, 60.0), run("peer", 25_000, 24.0))
    assert not throughput[1]
    assert "0.40x" in throughput[0]
    assert throughput[2] == "short by 0.60x"
    assert not latency[1]
    assert "2.50x" in latency[0]


def test_a_peer_run_with_errors_is_no_yardstick() -> None:
    [verdict] = peer_verdicts(run("ours", 10_000, 30.0), run("peer", 9_000, 20.0, errors=3))
    assert not verdict[1]
    assert "3 of 9003 requests failed" in verdict[2]


def test_the_path_targets_judge_the_overhead_and_the_cpu_outside_the_engine() -> None:
    """The path target: p50 end to end minus the engine's p50, and the CPU of every process
    but the engine's workers and the load generator."""
    path = run("path", 100, 3.0)
    path.engine_ms = [2.0] * 100
    cpu_row = {"client": 0.4, "envoy": 0.3, "lattice": 1.0, "compute": 2.0, "postgres": 0.2}
    (overhead, webhook, cpu) = path_verdicts(path, cpu_row)
    assert overhead == ("path p50 overhead 1.00 ms <= 1.5 ms", True, "over by -0.50 ms")
    assert webhook[:2] == ("webhook CPU per unsubscribed path event 0.000 ms <= 0.1 ms", True)
    assert cpu[:2] == ("path CPU outside the engine 1.50 ms <= 2 ms", True)
    slow = run("path", 100, 6.0)
    slow.engine_ms = [2.0] * 100
    (overhead, webhook, cpu) = path_verdicts(slow, {**cpu_row, "webhook": 1.5})
    assert overhead[1:] == (False, "over by 2.50 ms")
    assert webhook[1:] == (False, "over by 1.400 ms")
    assert cpu[1:] == (False, "over by 1.00 ms")


def test_the_field_path_is_judged_against_scipy() -> None:
    """The FIELD target: the FIELD path's p50 through REST at most half of scipy's query."""
    assert scipy_verdict(run("path-field", 50, 40.0), 100.0) == (
        "FIELD path p50 0.40x scipy's Dijkstra query (100.0 ms) <= 0.5x",
        True,
        "over by -0.10x",
    )
    assert scipy_verdict(run("path-field", 50, 72.0), 100.0)[1:] == (False, "over by 0.22x")
