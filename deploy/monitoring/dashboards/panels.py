"""The dashboards' building blocks: a small model and the panels every dashboard shares.

A dashboard is data (`Dashboard` of `Row`s of `Panel`s of `Query`s); grafana.py turns it into
Grafana JSON, snapshot.py draws it from a live Prometheus, and the live test runs every query.
The helpers below are the shared definitions: the golden signals of a service are the same
four panels on the overview, on its own dashboard and in the docs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

# Grafana's rate window (at least four scrapes); tools that query Prometheus directly
# substitute a concrete window for it (Query.promql).
RATE = "$__rate_interval"

# gRPC codes that are the service's fault (a client mistake is never an error here): the
# availability SLI's failures, as in deploy/monitoring/rules/sli.yml (a unit test compares).
SERVER_ERROR_CODES = (
    "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "DATA_LOSS", "UNIMPLEMENTED",
)  # fmt: skip
SERVER_ERRORS = f'code=~"{"|".join(SERVER_ERROR_CODES)}"'

# The availability objective of every service: 99.9 % of RPCs without a server error.
SLO_TARGET = 0.999

# The services' own scrape jobs (process metrics of Prometheus and the exporters left out).
SERVICE_JOBS = 'job=~"auth|lattice|webhook"'

REQUESTS = "catalytic_grpc_server_requests_total"
DURATION = "catalytic_grpc_server_request_duration_seconds"


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a panel and its legend (Grafana's `{{label}}` template).

    `may_be_empty` says why the query can rightly have no series on a healthy stack (a
    failure counter whose labels appear with the first failure, a GPU-only gauge); the live
    test then checks only that its metrics are known to Prometheus.
    """

    expr: str
    legend: str = ""
    may_be_empty: str | None = None

    def promql(self, rate_window: str) -> str:
        """The expression as Prometheus runs it, with Grafana's rate window substituted."""
        return self.expr.replace(RATE, rate_window)


@dataclass(frozen=True)
class Panel:
    """A graph (or a single stat) that answers one question."""

    title: str
    question: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = field(default=("catalytic",))

    def panels(self) -> Iterator[Panel]:
        for row in self.rows:
            yield from row.panels


def q(expr: str, legend: str = "", may_be_empty: str | None = None) -> Query:
    return Query(" ".join(expr.split()), legend, may_be_empty)


def _where(service: str | None, extra: str = "") -> str:
    parts = [f'service="{service}"'] if service else []
    if extra:
        parts.append(extra)
    return "{" + ", ".join(parts) + "}" if parts else ""


def _by(service: str | None, *labels: str) -> str:
    """Group by the service on the overview (all services), by `labels` on a service's page."""
    return ", ".join(labels) if service else ", ".join(("service", *labels))


def rate_sum(metric: str, service: str | None = None, *by: str, where: str = "") -> str:
    """sum by (...) (rate(metric{...}[window])): the shape of every counter panel."""
    return f"sum by ({_by(service, *by)}) (rate({metric}{_where(service, where)}[{RATE}]))"


def quantile(metric: str, q_: float, service: str | None = None, *by: str, where: str = "") -> str:
    """The q-quantile of a histogram over the rate window, per group."""
    groups = _by(service, "le", *by)
    return (
        f"histogram_quantile({q_}, sum by ({groups}) "
        f"(rate({metric}_bucket{_where(service, where)}[{RATE}])))"
    )


def error_ratio(service: str | None, window: str = RATE, *by: str) -> str:
    """Server errors / all RPCs. Zero (not empty) while there are none: the missing error
    series are filled from the same metric, so a renamed metric still empties the panel."""
    groups = _by(service, *by)
    sel_err = _where(service, SERVER_ERRORS)
    sel_all = _where(service)
    return (
        f"(sum by ({groups}) (rate({REQUESTS}{sel_err}[{window}]))"
        f" or sum by ({groups}) (rate({REQUESTS}{sel_all}[{window}])) * 0)"
        f" / sum by ({groups}) (rate({REQUESTS}{sel_all}[{window}]))"
    )


# ---------------------------------------------------------------------------- shared panels
def golden_signals(service: str | None = None) -> Row:
    """Traffic, errors, latency and saturation of one service (or of all, per service)."""
    legend = "{{method}}" if service else "{{service}}"
    by = ("method",) if service else ()
    scope = f"{service}'s" if service else "each service's"
    return Row(
        "Golden signals" + (f" — {service}" if service else ""),
        (
            Panel(
                "Requests per second",
                f"How much work is {scope} gRPC server doing, and of which kind?",
                (q(rate_sum(REQUESTS, service, *by), legend),),
                unit="reqps",
            ),
            Panel(
                "Server error ratio",
                f"What share of {scope} RPCs fail by its own fault "
                f"({', '.join(SERVER_ERROR_CODES)})?",
                (q(error_ratio(service, RATE, *by), legend),),
                unit="percentunit",
            ),
            Panel(
                "Latency p50 / p95 / p99",
                f"How long do {scope} RPCs take, from handler start to last response?",
                tuple(
                    q(quantile(DURATION, level, service), f"p{round(level * 100)} {legend}")
                    for level in (0.5, 0.95, 0.99)
                ),
                unit="s",
            ),
            Panel(
                "In flight and CPU",
                f"Is {scope} process saturated: RPCs being handled, CPU seconds per second?",
                (
                    q(
                        f"sum by (service) (catalytic_grpc_server_in_flight{_where(service)})",
                        "in flight {{service}}",
                    ),
                    q(
                        "sum by (service) (rate(process_cpu_seconds_total"
                        f"{_where(service, SERVICE_JOBS)}[{RATE}]))",
                        "cpu {{service}}",
                    ),
                ),
            ),
        ),
    )


def codes(service: str) -> Panel:
    return Panel(
        "Responses by gRPC code",
        f"Which status codes does {service} answer with (client mistakes included)?",
        (q(rate_sum(REQUESTS, service, "code"), "{{code}}"),),
        unit="reqps",
    )


def slo_burn(service: str | None = None) -> Panel:
    """Error-budget burn rate from the rules' SLI recording rules (sli.yml): 1 spends the budget
    exactly in the SLO period; AvailabilityBudgetBurnFast pages above 14.4 on 1 h and 5 min.
    Zero (not empty) without errors: the error ratio, absent then, is filled from the request
    rate of the same window, so a renamed recording rule still empties the panel."""
    budget = 1 - SLO_TARGET
    legend = "{{service}}" if service is None else service
    where = _where(service)

    def burn(window: str) -> str:
        return (
            f"(service:catalytic_grpc_server_errors:ratio_rate{window}{where}"
            f" or service:catalytic_grpc_server_requests:rate{window}{where} * 0) / {budget:g}"
        )

    return Panel(
        "SLO burn rate (1 h and 5 min)",
        f"How fast is the {SLO_TARGET:.1%} availability objective's error budget being spent "
        "(1 = exactly over 30 days; above 14.4 on both windows pages)?",
        (q(burn("1h"), f"1h {legend}"), q(burn("5m"), f"5m {legend}")),
    )


def process_memory(service: str | None = None) -> Panel:
    return Panel(
        "Resident memory",
        "How much memory does each process hold?",
        (q(f"sum by (service) (process_resident_memory_bytes{_where(service)})", "{{service}}"),),
        unit="bytes",
    )


def db_pool(service: str | None = None) -> Row:
    """The service's PostgreSQL connection pool: use, waits, timeouts, fail-fast state."""
    legend = "{{service}}"
    where = _where(service)
    return Row(
        "Database pool" + (f" — {service}" if service else ""),
        (
            Panel(
                "Connections: in use / open / max",
                "How close is the pool to its size, and is anything waiting for a connection?",
                (
                    q(f"sum by (service) (catalytic_db_pool_in_use{where})", f"in use {legend}"),
                    q(f"sum by (service) (catalytic_db_pool_size{where})", f"open {legend}"),
                    q(f"sum by (service) (catalytic_db_pool_max_size{where})", f"max {legend}"),
                    q(f"sum by (service) (catalytic_db_pool_waiting{where})", f"waiting {legend}"),
                ),
            ),
            Panel(
                "Connection wait p95 and timeouts",
                "How long do requests wait for a connection, and how many give up "
                "(DATABASE_WAIT_S)?",
                (
                    q(
                        quantile(
                            "catalytic_db_pool_wait_seconds", 0.95, None, where=_strip(service)
                        ),
                        f"p95 wait {legend}",
                    ),
                    q(
                        f"sum by (service) (rate(catalytic_db_pool_timeouts_total{where}[{RATE}]))",
                        f"timeouts/s {legend}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Database up (as the service sees it)",
                "Does the service consider PostgreSQL reachable (0 = failing fast, ADR 44)?",
                (q(f"min by (service) (catalytic_db_up{where})", legend),),
            ),
        ),
    )


def redis_client(service: str | None = None) -> Panel:
    legend = "{{service}}"
    where = _where(service)
    return Panel(
        "Redis calls: p95 latency and errors",
        "Are the service's Redis calls (rate limits, denylist, caches) fast and succeeding?",
        (
            q(
                quantile(
                    "catalytic_redis_command_duration_seconds", 0.95, None, where=_strip(service)
                ),
                f"p95 {legend}",
            ),
            q(
                f"sum by (service) (rate(catalytic_redis_errors_total{where}[{RATE}]))",
                f"errors/s {legend}",
            ),
        ),
        unit="s",
    )


def _strip(service: str | None) -> str:
    """A service matcher without braces, for helpers that add their own."""
    return f'service="{service}"' if service else ""


def targets_up() -> Panel:
    return Panel(
        "Scrape targets up",
        "Is Prometheus reaching every job (1 = every target of the job answers)?",
        (q("min by (job) (up)", "{{job}}"),),
        kind="stat",
    )


def health_probes() -> Panel:
    return Panel(
        "gRPC health probes",
        "Does each service answer SERVING on grpc.health.v1 (blackbox exporter)?",
        (q('min by (service) (probe_success{job="grpc_health"})', "{{service}}"),),
        kind="stat",
    )
