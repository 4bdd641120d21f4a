"""Metrics of the services' PostgreSQL pools: gauges read at scrape time, checkouts timed.

Every label is the service's name (the pool's name), never a tenant or a query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from services.common.live_metrics import LiveCollector

POOL_WAIT_SECONDS = Histogram(
    "catalytic_db_pool_wait_seconds",
    "Time a request waited for a pooled PostgreSQL connection (timeouts included), by service.",
    ["service"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
POOL_TIMEOUTS = Counter(
    "catalytic_db_pool_timeouts_total",
    "Connection checkouts that gave up after DATABASE_WAIT_S (the request failed with"
    " UNAVAILABLE), by service.",
    ["service"],
)


@dataclass(frozen=True)
class PoolSnapshot:
    """One pool as a scrape sees it (Database.snapshot)."""

    service: str
    size: int  # connections open or being opened
    max_size: int
    in_use: int  # checked out by requests
    waiting: int  # requests waiting for a connection
    up: bool  # False while the Database fails requests fast (ADR 44)


class DatabaseGauges(LiveCollector[PoolSnapshot]):
    """Pool size, use, waiters and the fail-fast state of every registered Database."""

    def metrics(self, snapshots: list[PoolSnapshot]) -> Iterable[Metric]:
        families = {
            "size": GaugeMetricFamily(
                "catalytic_db_pool_size",
                "PostgreSQL connections the pool holds (open or being opened).",
                labels=["service"],
            ),
            "max_size": GaugeMetricFamily(
                "catalytic_db_pool_max_size",
                "Most connections the pool may hold (DB_POOL_MAX).",
                labels=["service"],
            ),
            "in_use": GaugeMetricFamily(
                "catalytic_db_pool_in_use",
                "Pooled connections checked out by requests right now.",
                labels=["service"],
            ),
            "waiting": GaugeMetricFamily(
                "catalytic_db_pool_waiting",
                "Requests waiting for a pooled connection right now.",
                labels=["service"],
            ),
        }
        up = GaugeMetricFamily(
            "catalytic_db_up",
            "0 while the service considers PostgreSQL down and fails requests at once (ADR 44),"
            " else 1.",
            labels=["service"],
        )
        services = sorted({snapshot.service for snapshot in snapshots})
        for service in services:
            pools = [snapshot for snapshot in snapshots if snapshot.service == service]
            for attribute, family in families.items():
                family.add_metric([service], sum(getattr(pool, attribute) for pool in pools))
            up.add_metric([service], float(all(pool.up for pool in pools)))
        yield from families.values()
        yield up


DATABASE_GAUGES = DatabaseGauges()
REGISTRY.register(DATABASE_GAUGES)
