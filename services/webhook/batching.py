"""Group commit: what arrives while a write is under way goes together in the next one.

Published events and attempt results are each written in their tenant's transaction. One
transaction apiece would cost more than the work itself at hundreds per second, so they wait
here while the previous write runs and then go together, one transaction per tenant (tenants in
parallel). When nothing is being written an item goes at once: batching adds no delay, only the
wait for a write already running.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
# Writes one tenant's items in one transaction; one result per item, in order.
Write = Callable[[str, Sequence[Item]], Awaitable[Sequence[Result]]]

MAX_BATCH = 256


class GroupCommit(Generic[Item, Result]):
    """Batches `submit` calls into `write` calls, one per tenant and round."""

    def __init__(self, write: Write[Item, Result], *, max_batch: int = MAX_BATCH) -> None:
        self._write = write
        self._max_batch = max_batch
        self._waiting: list[tuple[str, Item, asyncio.Future[Result]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, tenant_id: str, item: Item) -> Result:
        """Writes `item` with whatever else is waiting; its result, or the write's error.

        Cancelling the caller does not withdraw the item: once submitted it is written.
        """
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((tenant_id, item, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="webhook-results")
        return await future

    async def drain(self) -> None:
        """Returns once everything submitted so far is written (or has failed)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                by_tenant: dict[str, list[tuple[Item, asyncio.Future[Result]]]] = defaultdict(list)
                for tenant_id, item, future in batch:
                    by_tenant[tenant_id].append((item, future))
                await asyncio.gather(
                    *(self._write_tenant(tenant, entries) for tenant, entries in by_tenant.items())
                )
        finally:
            self._flusher = None

    async def _write_tenant(
        self, tenant_id: str, entries: list[tuple[Item, asyncio.Future[Result]]]
    ) -> None:
        try:
            results = await self._write(tenant_id, [item for item, _ in entries])
        except Exception as exc:
            for _, future in entries:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(entries, results, strict=True):
            if not future.done():
                future.set_result(result)
