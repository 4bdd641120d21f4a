"""loadtest rest: ours against the FastAPI peer (issue 18, target 1): throughput at least the
peer's, p99 at most 1.5 times the peer's, and no verdict from a peer run with errors."""

from __future__ import annotations

import time

from loadtest.report import Result
from loadtest.rest import peer_verdicts


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
