"""The database pool's metrics: gauges read from the pool when scraped, checkouts timed,
timeouts counted, and `up` following the fail-fast state."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.common import errors
from services.common.db import Connection, Database, Pool
from services.common.db_metrics import DATABASE_GAUGES, DatabaseGauges, PoolSnapshot

from .test_db_outage import WAIT_S, unused_port

SERVICE = "dbmetrics"


def sample(name: str, service: str = SERVICE) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": service})


@pytest.fixture
async def unreachable() -> AsyncIterator[Database]:
    """A pool named like a service, pointing at a port nobody listens on."""
    pool: Pool = AsyncConnectionPool(
        f"postgresql://nobody@127.0.0.1:{unused_port()}/none",
        connection_class=Connection,
        kwargs={"row_factory": dict_row, "connect_timeout": 2},
        min_size=0,
        max_size=3,
        name=SERVICE,
        open=False,
        timeout=WAIT_S,
        reconnect_timeout=WAIT_S,
    )
    await pool.open()
    database = Database(pool)
    token = DATABASE_GAUGES.add(database.snapshot)
    try:
        yield database
    finally:
        DATABASE_GAUGES.remove(token)
        await pool.close()


async def test_a_timed_out_checkout_is_counted_timed_and_marks_the_database_down(
    unreachable: Database,
) -> None:
    assert sample("catalytic_db_up") == 1
    assert sample("catalytic_db_pool_max_size") == 3
    assert sample("catalytic_db_pool_in_use") == 0
    timeouts = sample("catalytic_db_pool_timeouts_total") or 0.0
    waits = sample("catalytic_db_pool_wait_seconds_count") or 0.0
    waited = sample("catalytic_db_pool_wait_seconds_sum") or 0.0

    with pytest.raises(errors.Unavailable):
        async with unreachable.transaction():
            pass

    assert sample("catalytic_db_pool_timeouts_total") == timeouts + 1
    assert sample("catalytic_db_pool_wait_seconds_count") == waits + 1
    assert (sample("catalytic_db_pool_wait_seconds_sum") or 0.0) - waited >= WAIT_S * 0.9
    assert sample("catalytic_db_up") == 0
    # Failing fast is no checkout: nothing more is timed or counted.
    with pytest.raises(errors.Unavailable):
        await unreachable.tenant_statement("t", "SELECT 1")
    assert sample("catalytic_db_pool_wait_seconds_count") == waits + 1
    assert sample("catalytic_db_pool_timeouts_total") == timeouts + 1


def test_a_removed_pool_is_no_longer_exported() -> None:
    gauges = DatabaseGauges()
    token = gauges.add(lambda: PoolSnapshot("a", size=1, max_size=2, in_use=0, waiting=0, up=True))
    assert [len(family.samples) for family in gauges.collect()] == [1] * 5
    gauges.remove(token)
    gauges.remove(token)  # twice is harmless
    assert [len(family.samples) for family in gauges.collect()] == [0] * 5


def test_pools_of_one_service_add_up_and_any_down_one_is_down() -> None:
    gauges = DatabaseGauges()
    gauges.add(lambda: PoolSnapshot("a", size=2, max_size=10, in_use=1, waiting=0, up=True))
    gauges.add(lambda: PoolSnapshot("a", size=3, max_size=10, in_use=3, waiting=4, up=False))
    gauges.add(lambda: PoolSnapshot("b", size=1, max_size=5, in_use=0, waiting=0, up=True))
    values = {
        (sample.name, sample.labels["service"]): sample.value
        for family in gauges.collect()
        for sample in family.samples
    }
    assert values == {
        ("catalytic_db_pool_size", "a"): 5,
        ("catalytic_db_pool_size", "b"): 1,
        ("catalytic_db_pool_max_size", "a"): 20,
        ("catalytic_db_pool_max_size", "b"): 5,
        ("catalytic_db_pool_in_use", "a"): 4,
        ("catalytic_db_pool_in_use", "b"): 0,
        ("catalytic_db_pool_waiting", "a"): 4,
        ("catalytic_db_pool_waiting", "b"): 0,
        ("catalytic_db_up", "a"): 0,
        ("catalytic_db_up", "b"): 1,
    }
