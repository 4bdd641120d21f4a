"""Database: failures become domain errors, and an unreachable database fails requests fast.

No server is needed: the pool points at a port nobody listens on (connects are refused at
once), which is what the services see while PostgreSQL is stopped.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.common import errors
from services.common.db import RETRY_AFTER_S, Connection, Database, Pool, database_errors

WAIT_S = 0.5


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def unreachable() -> AsyncIterator[Database]:
    pool: Pool = AsyncConnectionPool(
        f"postgresql://nobody@127.0.0.1:{unused_port()}/none",
        connection_class=Connection,
        kwargs={"row_factory": dict_row, "connect_timeout": 2},
        min_size=0,
        max_size=2,
        open=False,
        timeout=WAIT_S,
        reconnect_timeout=WAIT_S,
    )
    await pool.open()
    try:
        yield Database(pool)
    finally:
        await pool.close()


async def test_an_unreachable_database_is_unavailable_within_the_wait_then_at_once(
    unreachable: Database,
) -> None:
    started = time.monotonic()
    with pytest.raises(errors.Unavailable) as first:
        async with unreachable.transaction():
            pass
    waited = time.monotonic() - started
    assert WAIT_S * 0.9 <= waited < WAIT_S + 1.0
    assert first.value.retry_after_s == RETRY_AFTER_S

    # Known to be down: the next requests do not wait again.
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(errors.Unavailable):
            await unreachable.tenant_statement("t", "SELECT 1")
        assert time.monotonic() - started < 0.1


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (psycopg.errors.AdminShutdown("terminating connection"), errors.Unavailable),
        (psycopg.OperationalError("server closed the connection unexpectedly"), errors.Unavailable),
        (psycopg.InterfaceError("the connection is closed"), errors.Unavailable),
        (psycopg.errors.LockNotAvailable("lock timeout"), errors.DeadlineExceeded),
        (psycopg.errors.SerializationFailure("could not serialize"), errors.Aborted),
        (psycopg.errors.DeadlockDetected("deadlock"), errors.Aborted),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value.__name__,
)
def test_database_errors_maps_failures_to_domain_errors(
    raised: Exception, expected: type[errors.DomainError]
) -> None:
    with pytest.raises(expected) as caught, database_errors():
        raise raised
    if expected is errors.Unavailable:
        assert isinstance(caught.value, errors.Unavailable)
        assert caught.value.retry_after_s == RETRY_AFTER_S


def test_database_errors_leaves_other_errors_alone() -> None:
    with pytest.raises(psycopg.errors.UniqueViolation), database_errors():
        raise psycopg.errors.UniqueViolation("duplicate key")
