"""The gate's fixed set of benchmarks, in the order they run (those needing no stack first).

Adding one is one entry here, a class with `measure(context) -> Measurement` (perf/model.py),
and its baseline: `make perf-baseline PERF_ARGS="--only NAME"` (perf/README.md).
"""

from __future__ import annotations

from perf.engine import EngineVsPeer
from perf.model import Benchmark
from perf.rest import RestVsCeiling
from perf.seed import SeedVsCeiling
from perf.webhooks import DeliveriesVsPublish

BENCHMARKS: tuple[Benchmark, ...] = (
    EngineVsPeer("engine-bfs-unit", "unit/ours-bfs", "unit/scipy-bfs"),
    EngineVsPeer("engine-auto-unit", "unit/ours-auto", "unit/scipy-bfs"),
    EngineVsPeer("engine-dijkstra-field", "field/ours-dijkstra", "field/scipy"),
    RestVsCeiling("rest-get-vs-ceiling"),
    DeliveriesVsPublish("webhook-deliveries-vs-publish"),
    SeedVsCeiling("seed-journeys-vs-ceiling"),
)
