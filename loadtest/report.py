"""What a load run measured, in ghz's JSON report format, and when a run may serve as a ceiling."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PERCENTILES = (10, 25, 50, 75, 90, 95, 99)


@dataclass
class Result:
    """Latencies and outcomes of one scenario (or one route of it). A request that got another
    status than `ok`, or none at all (a transport error), is an error."""

    name: str
    started: float
    total_s: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    engine_ms: list[float] = field(default_factory=list)
    first_failure: str = ""
    # The status that counts as success: "200" over HTTP, "OK" over gRPC (loadtest/grpc_direct.py).
    ok: str = "200"

    @property
    def count(self) -> int:
        return len(self.latencies_ns) + sum(self.errors.values())

    def percentile_ns(self, p: float) -> int:
        data = sorted(self.latencies_ns)
        if not data:
            return 0
        return data[min(len(data) - 1, max(0, round(p / 100 * len(data)) - 1))]

    def percentile_ms(self, p: float) -> float:
        return self.percentile_ns(p) / 1e6

    @property
    def rps(self) -> float:
        return self.count / self.total_s if self.total_s else 0.0

    @property
    def error_count(self) -> int:
        bad = sum(n for code, n in self.statuses.items() if code != self.ok)
        return bad + sum(self.errors.values())

    def add(self, latency_ns: int, status: int | None, error: str = "", failure: str = "") -> None:
        """One request: its latency and HTTP status, or the transport error it ended with."""
        if status is None:
            self.errors[error or "error"] += 1
        else:
            self.latencies_ns.append(latency_ns)
            self.statuses[str(status)] += 1
        if failure and not self.first_failure:
            self.first_failure = failure

    def ghz(self) -> dict[str, Any]:
        """ghz's JSON report fields; durations in nanoseconds."""
        lat = self.latencies_ns
        return {
            "name": self.name,
            "date": datetime.fromtimestamp(self.started, UTC).isoformat(),
            "count": self.count,
            "total": int(self.total_s * 1e9),
            "average": int(sum(lat) / len(lat)) if lat else 0,
            "fastest": min(lat) if lat else 0,
            "slowest": max(lat) if lat else 0,
            "rps": self.rps,
            "latencyDistribution": [
                {"percentage": p, "latency": self.percentile_ns(p)} for p in PERCENTILES
            ],
            "statusCodeDistribution": dict(self.statuses),
            "errorDistribution": dict(self.errors),
        }


def ceiling_rps(result: Result) -> float | None:
    """The requests per second `result` may be quoted as a ceiling, or None when it has any
    error: refused (a rate limit's 429), failed or unanswered requests were not served, so
    their rate is not a capacity. (A faster machine once reported a no-op ceiling of 14,823
    req/s, 126,303 of them the gateway backstop's 429s, as 100%.)"""
    if result.error_count or not result.count or not result.total_s:
        return None
    return result.rps
