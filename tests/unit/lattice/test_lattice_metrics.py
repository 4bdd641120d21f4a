"""The lattice service's collectors: the compute pool and GPU read from the routers' stats, the
outbox backlog from the relays' last measurement, and compute time by device."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from services.lattice.engine.backends import GPU_FAILURE_REASONS
from services.lattice.engine.compute import RouterStats
from services.lattice.engine.cpu_pool import PoolStats
from services.lattice.metrics import Backlog, ComputeGauges, OutboxGauges, observed
from services.lattice.outbox import OutboxRelay, RelaySettings

from .test_lattice_outbox import MemoryOutbox, event


def values(collector: ComputeGauges | OutboxGauges) -> dict[str, float]:
    return {
        sample.name + "".join(f"/{value}" for value in sample.labels.values()): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def router_stats(*, gpu: bool, fallbacks: dict[str, int] | None = None) -> RouterStats:
    counts = dict.fromkeys(GPU_FAILURE_REASONS, 0) | (fallbacks or {})
    return RouterStats(
        pool=PoolStats(
            workers=3, ready=3, busy=2, waiting=4, max_queue=6, tenants=2, refusals={"share": 1}
        ),
        gpu_memory_bytes=100 if gpu else None,
        gpu_memory_total_bytes=1000 if gpu else None,
        gpu_fallbacks=counts,
    )


def test_without_a_gpu_the_pool_and_zero_gpu_counters_are_exported() -> None:
    gauges = ComputeGauges()
    gauges.add(lambda: router_stats(gpu=False))
    got = values(gauges)
    assert got["catalytic_lattice_pool_queue_depth"] == 4
    assert got["catalytic_lattice_pool_max_queue"] == 6
    assert got["catalytic_lattice_pool_workers"] == 3
    assert got["catalytic_lattice_pool_busy_workers"] == 2
    assert got["catalytic_lattice_pool_tenants"] == 2
    assert got["catalytic_lattice_pool_refusals_total/share"] == 1
    assert got["catalytic_lattice_pool_refusals_total/plan"] == 0
    assert got["catalytic_lattice_gpu_oom_total"] == 0
    for reason in GPU_FAILURE_REASONS:
        assert got[f"catalytic_lattice_gpu_fallbacks_total/{reason}"] == 0
    assert "catalytic_lattice_gpu_memory_bytes" not in got
    assert "catalytic_lattice_gpu_memory_total_bytes" not in got


def test_with_a_gpu_memory_and_fallbacks_add_up_over_routers() -> None:
    gauges = ComputeGauges()
    gauges.add(lambda: router_stats(gpu=True, fallbacks={"out_of_memory": 2}))
    token = gauges.add(lambda: router_stats(gpu=False, fallbacks={"declined": 5}))
    got = values(gauges)
    assert got["catalytic_lattice_pool_queue_depth"] == 8
    assert got["catalytic_lattice_gpu_memory_bytes"] == 100
    assert got["catalytic_lattice_gpu_memory_total_bytes"] == 1000
    assert got["catalytic_lattice_gpu_oom_total"] == 2
    assert got["catalytic_lattice_gpu_fallbacks_total/out_of_memory"] == 2
    assert got["catalytic_lattice_gpu_fallbacks_total/declined"] == 5
    gauges.remove(token)
    assert values(gauges)["catalytic_lattice_gpu_fallbacks_total/declined"] == 0


def test_the_outbox_gauges_take_the_worst_replica_and_wait_for_a_measurement() -> None:
    gauges = OutboxGauges()
    gauges.add(lambda: None)
    assert values(gauges) == {}  # nothing measured yet: no sample, rather than a false 0
    gauges.add(lambda: Backlog(3, 40.0))
    gauges.add(lambda: Backlog(2, 55.0))
    assert values(gauges) == {
        "catalytic_lattice_outbox_pending": 3,
        "catalytic_lattice_outbox_oldest_age_seconds": 55.0,
    }


async def test_the_relay_measures_its_backlog_and_ages_it_between_measurements() -> None:
    outbox = MemoryOutbox(oldest_age_s=30.0)
    outbox.add(event(1), event(2))
    relay = OutboxRelay(
        outbox, Unreachable(), RelaySettings(poll_interval_s=60, stats_interval_s=60)
    )
    assert relay.backlog() is None
    relay.start()
    try:
        await asyncio.wait_for(outbox.was_measured.wait(), 5)
        first = relay.backlog()
        assert first is not None
        assert first.pending == 2
        assert first.oldest_age_s >= 30.0
        await asyncio.sleep(0.05)
        later = relay.backlog()
        assert later is not None
        assert later.oldest_age_s >= first.oldest_age_s + 0.05
        assert outbox.measured == 1  # aged from memory, not measured again
    finally:
        await relay.close()


class Unreachable:
    """A publisher whose calls never finish: these tests look at the backlog only."""

    async def publish(self, event: object) -> None:
        await asyncio.sleep(3600)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
async def test_compute_time_is_labelled_by_device(device: str) -> None:
    labels = {"op": "analysis", "device": device}
    before = REGISTRY.get_sample_value("catalytic_lattice_compute_seconds_count", labels) or 0.0
    async with observed("analysis", "") as observation:
        observation.device, observation.elapsed_ms = device, 12.0
    assert (
        REGISTRY.get_sample_value("catalytic_lattice_compute_seconds_count", labels) == before + 1
    )
