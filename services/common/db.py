"""PostgreSQL access: an async connection pool and transactions scoped to one tenant."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.common.config import redact_url
from services.common.errors import DependencyUnavailableError

Connection = psycopg.AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Connection]


_LOOKUP_NAME = re.compile(r"[a-z][a-z0-9_]*")


class DatabaseUnavailableError(DependencyUnavailableError):
    """The database could not be reached at start-up."""


async def open_pool(
    url: str, *, min_size: int, max_size: int, name: str, connect_timeout_s: float = 10.0
) -> Pool:
    """An opened pool whose `min_size` connections are up, or DatabaseUnavailableError."""
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
        check=AsyncConnectionPool.check_connection,
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
