"""PostgreSQL access: an async connection pool and transactions scoped to one tenant."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.sql import SQL, Composed
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.common.config import DEFAULT_DATABASE_WAIT_S, redact_url
from services.common.db_metrics import POOL_TIMEOUTS, POOL_WAIT_SECONDS, PoolSnapshot
from services.common.errors import (
    Aborted,
    DeadlineExceeded,
    DependencyUnavailableError,
    Unavailable,
)

logger = logging.getLogger("catalytic.db")

Connection = psycopg.AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Connection]


_LOOKUP_NAME = re.compile(r"[a-z][a-z0-9_]*")
# A connection back in the pool for longer than this is pinged before it is handed out again.
IDLE_CHECK_AFTER_S = 1.0
# What an Unavailable from the database tells the caller (`retry-after`, RetryInfo).
RETRY_AFTER_S = 1.0
DATABASE_UNAVAILABLE = "the database is not available; retry shortly"
LOCK_WAIT_TOO_LONG = "waited too long for a row another request holds; retry shortly"
SERIALIZATION_CONFLICT = "a concurrent change conflicted with this one; retry"
_T = TypeVar("_T")


@contextmanager
def database_errors() -> Iterator[None]:
    """The one mapping of database failures to domain errors, for every service (ADR 44).

    No connection in time, a connection refused, lost or shut down (AdminShutdown...): the
    database is down for now, Unavailable with a retry hint (503 + `retry-after`), never an
    internal error. A lock wait past `lock_timeout` is DeadlineExceeded and a serialization
    failure or deadlock Aborted: the database is up, this request lost a race.
    """
    try:
        yield
    except psycopg.errors.LockNotAvailable:
        raise DeadlineExceeded(LOCK_WAIT_TOO_LONG) from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        # SQLSTATE class 40 (serialization failure, deadlock); psycopg does not group them.
        if (getattr(exc, "sqlstate", None) or "").startswith("40"):
            raise Aborted(SERIALIZATION_CONFLICT) from exc
        # OperationalError covers the pool's own (PoolTimeout, PoolClosed, TooManyRequests);
        # InterfaceError is a connection psycopg already knows to be closed.
        raise Unavailable(DATABASE_UNAVAILABLE, retry_after_s=RETRY_AFTER_S) from exc


async def retry_conflicts(
    action: Callable[[], Awaitable[_T]], *, attempts: int = 3, backoff_s: float = 0.02
) -> _T:
    """Runs `action` (a whole transaction) again when the database aborted it for a deadlock or
    a serialization failure: the abort rolled everything back, so running it again is safe.
    For single-statement writes that race with background workers (a DELETE whose cascade
    meets the delivery worker's row locks); the last conflict still reaches the caller."""
    for attempt in range(1, attempts + 1):
        try:
            return await action()
        except Aborted as exc:
            if str(exc) != SERIALIZATION_CONFLICT or attempt == attempts:
                raise
            await asyncio.sleep(backoff_s * attempt)
    raise AssertionError("unreachable")


class _IdleCheck:
    """Pings a pooled connection only when it sat idle, not on every checkout.

    A connection that was in use a moment ago is as good as a ping; one that idled may have
    been cut by a database restart or an idle timeout. Pinging on every checkout would add a
    round trip to every transaction.
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._returned_at: weakref.WeakKeyDictionary[Connection, float] = (
            weakref.WeakKeyDictionary()
        )

    async def returned(self, conn: Connection) -> None:
        self._returned_at[conn] = time.monotonic()

    async def check(self, conn: Connection) -> None:
        if conn.broken or conn.closed:
            raise psycopg.OperationalError("the connection is closed")
        returned_at = self._returned_at.get(conn)
        if returned_at is None or time.monotonic() - returned_at >= IDLE_CHECK_AFTER_S:
            # Bounded: the pool's checkout timeout does not cover the check, and a ping to a
            # host that went silent (no reset) would otherwise wait for TCP to give up.
            async with asyncio.timeout(self._timeout_s):
                await AsyncConnectionPool.check_connection(conn)


class DatabaseUnavailableError(DependencyUnavailableError):
    """The database could not be reached at start-up."""


async def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    name: str,
    connect_timeout_s: float = 10.0,
    wait_s: float = DEFAULT_DATABASE_WAIT_S,
) -> Pool:
    """An opened pool whose `min_size` connections are up, or DatabaseUnavailableError.

    `connect_timeout_s` bounds the start-up; `wait_s` bounds what a request waits for a
    connection afterwards (ADR 44).
    """
    idle_check = _IdleCheck(wait_s)
    pool: Pool = AsyncConnectionPool(
        url,
        connection_class=Connection,
        # Autocommit: transactions are explicit blocks (transaction()), never left open by
        # a forgotten commit. libpq's connect_timeout is whole seconds, at least 2.
        kwargs={
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": max(2, math.ceil(wait_s)),
        },
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        # A request waits this long for a connection, then fails with Unavailable (503),
        # instead of psycopg_pool's 30 s, which outlasts the gateway's route timeout.
        timeout=wait_s,
        # A failing reconnection gives up after this long instead of backing off for five
        # minutes (1, 2, 4... s apart): the next request that needs a connection starts a fresh
        # attempt at once, so the pool finds a database that came back within about wait_s.
        reconnect_timeout=wait_s,
        # Connections killed by a database restart are found before a request gets them.
        check=idle_check.check,
        reset=idle_check.returned,
    )
    try:
        await pool.open(wait=True, timeout=connect_timeout_s)
    except (PoolTimeout, psycopg.Error) as exc:
        await pool.close()
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL at {redact_url(url)} within {connect_timeout_s:g} s"
        ) from exc
    return pool


class Database:
    """Transactions over a pool; the pool's owner closes it.

    Every method maps database failures through database_errors(): callers see Unavailable,
    DeadlineExceeded or Aborted, never a psycopg exception about the connection.

    While the database is down, requests fail at once instead of each waiting for the pool's
    timeout (ADR 44). It is down from the moment a connection dies under a request, or a
    checkout times out while the pool's connects fail; a checkout that times out with no failed
    connect (every connection busy) is no outage. From then on one background probe waits for
    a connection (which also makes the pool keep trying to connect), and the first one it gets
    ends the outage.
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._down = False
        self._probe: asyncio.Task[None] | None = None
        self._connect_errors_seen = self._connect_errors()
        # Bound once: a checkout costs one observe (and a timeout one increment), no lookup.
        self._wait_seconds = POOL_WAIT_SECONDS.labels(pool.name)
        self._timeouts = POOL_TIMEOUTS.labels(pool.name)

    def snapshot(self) -> PoolSnapshot:
        """The pool's state for a scrape (db_metrics.DatabaseGauges); reads, never waits."""
        stats = self.pool.get_stats()
        size = stats.get("pool_size", 0)
        return PoolSnapshot(
            service=self.pool.name,
            size=size,
            max_size=stats.get("pool_max", self.pool.max_size),
            in_use=max(0, size - stats.get("pool_available", 0)),
            waiting=stats.get("requests_waiting", 0),
            up=not self._down,
        )

    def _connect_errors(self) -> int:
        return self.pool.get_stats().get("connections_errors", 0)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; failures inside the block are mapped too."""
        with database_errors():
            conn = await self._checkout()
            try:
                yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError):
                if conn.closed or conn.broken:
                    self._mark_down()
                raise
            finally:
                await self.pool.putconn(conn)

    async def _checkout(self) -> Connection:
        if self._down:
            raise Unavailable(DATABASE_UNAVAILABLE, retry_after_s=RETRY_AFTER_S)
        started = time.perf_counter()
        try:
            return await self.pool.getconn()
        except PoolTimeout:
            self._timeouts.inc()
            errors = self._connect_errors()
            if errors != self._connect_errors_seen:
                self._connect_errors_seen = errors
                self._mark_down()
            raise
        finally:
            self._wait_seconds.observe(time.perf_counter() - started)

    def _mark_down(self) -> None:
        if self._down:
            return
        logger.warning("database unreachable: requests fail fast until it answers again")
        self._down = True
        self._probe = asyncio.create_task(self._wait_until_up())

    async def _wait_until_up(self) -> None:
        while True:
            try:
                conn = await self.pool.getconn()
            except PoolTimeout:
                continue  # the pool goes on trying to connect, and so do we
            except psycopg.OperationalError:
                if self.pool.closed:
                    return
                await asyncio.sleep(RETRY_AFTER_S)
                continue
            await self.pool.putconn(conn)
            self._connect_errors_seen = self._connect_errors()
            self._down = False
            logger.info("database reachable again")
            return

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        async with self._connection() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def tenant_transaction(self, tenant_id: str) -> AsyncIterator[Connection]:
        """A transaction that row-level security restricts to `tenant_id`'s rows.

        The setting is transaction-local (`set_config(..., true)`), so it can never leak to
        the next user of the pooled connection.
        """
        async with self.transaction() as conn:
            await conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
            yield conn

    async def tenant_statement(
        self, tenant_id: str, query: str | SQL | Composed, params: Sequence[object] = ()
    ) -> list[DictRow]:
        """Runs one statement under `tenant_id`'s row-level security in one round trip
        (tenant_transaction takes four: BEGIN, the setting, the statement, COMMIT); its rows.

        The setting and the statement travel as one simple-protocol message, which PostgreSQL
        runs as one implicit transaction: the transaction-local setting holds for the statement
        and ends with it. psycopg binds `params` on the client (quoted literals, never
        formatted into the text). For a read, or a write that is one statement on its own
        (a statement is atomic); writes that go together belong in tenant_transaction.
        """
        statement = SQL("SELECT set_config('app.tenant_id', %s, true); ") + (
            SQL(query) if isinstance(query, str) else query
        )
        async with self._connection() as conn:
            cur = psycopg.AsyncClientCursor(conn, row_factory=dict_row)
            await cur.execute(statement, (tenant_id, *params))
            cur.nextset()
            return await cur.fetchall() if cur.description is not None else []

    @asynccontextmanager
    async def lookup_transaction(self, **lookups: str) -> AsyncIterator[Connection]:
        """A transaction whose policies may match rows by key before the tenant is known.

        Each `name=value` becomes the transaction-local setting `app.lookup_<name>`, which
        policies read with `app_lookup('<name>')` (e.g. log-in by e-mail: `email=...`).
        """
        for name in lookups:
            if not _LOOKUP_NAME.fullmatch(name):
                raise ValueError(f"lookup name {name!r} must be lowercase letters, digits and _")
        async with self.transaction() as conn:
            for name, value in lookups.items():
                await conn.execute("SELECT set_config(%s, %s, true)", (f"app.lookup_{name}", value))
            yield conn

    async def check(self) -> None:
        """Raises when the database does not answer; for readiness checks."""
        async with self._connection() as conn:
            await conn.execute("SELECT 1")
