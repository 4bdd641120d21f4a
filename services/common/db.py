"""PostgreSQL access: an async connection pool and transactions scoped to one tenant."""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.sql import SQL, Composed
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.common.config import redact_url
from services.common.errors import DependencyUnavailableError

Connection = psycopg.AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Connection]


_LOOKUP_NAME = re.compile(r"[a-z][a-z0-9_]*")
# A connection back in the pool for longer than this is pinged before it is handed out again.
IDLE_CHECK_AFTER_S = 1.0


class _IdleCheck:
    """Pings a pooled connection only when it sat idle, not on every checkout.

    A connection that was in use a moment ago is as good as a ping; one that idled may have
    been cut by a database restart or an idle timeout. Pinging on every checkout would add a
    round trip to every transaction.
    """

    def __init__(self) -> None:
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
            await AsyncConnectionPool.check_connection(conn)


class DatabaseUnavailableError(DependencyUnavailableError):
    """The database could not be reached at start-up."""


async def open_pool(
    url: str, *, min_size: int, max_size: int, name: str, connect_timeout_s: float = 10.0
) -> Pool:
    """An opened pool whose `min_size` connections are up, or DatabaseUnavailableError."""
    idle_check = _IdleCheck()
    pool: Pool = AsyncConnectionPool(
        url,
        connection_class=Connection,
        # Autocommit: transactions are explicit blocks (transaction()), never left open by
        # a forgotten commit.
        kwargs={"autocommit": True, "row_factory": dict_row},
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
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
    """Transactions over a pool; the pool's owner closes it."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        async with self.pool.connection() as conn, conn.transaction():
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
        async with self.pool.connection() as conn:
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
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")
