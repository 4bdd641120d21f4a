"""Test doubles for the lattice service: an in-memory store, an inline compute backend,
principals and real tokens."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from services.common.context import Principal
from services.common.paging import Cursor
from services.lattice.cache import FieldCache
from services.lattice.catalog import Catalog
from services.lattice.engine.analysis import analyze
from services.lattice.engine.backends import (
    AnalysisOutcome,
    FieldLike,
    FieldOutcome,
    PathOutcome,
    TransformOutcome,
)
from services.lattice.engine.fair_queue import Share
from services.lattice.engine.fills import Fill, check_fill, make_field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.paths import Algorithm, Cost, find_path
from services.lattice.engine.transforms import TransformOp, apply_transform
from services.lattice.events import EventLog
from services.lattice.fields import EncodedField
from services.lattice.records import LatticeRecord, NewLattice, OutboxEvent
from services.lattice.server import Domain
from tests.support.identity import owner as owner_principal

TENANT = str(uuid.uuid4())
OTHER_TENANT = str(uuid.uuid4())
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def principal(tenant_id: str = TENANT) -> Principal:
    return owner_principal(tenant_id)


@dataclass
class FakeStore:
    """LatticeStore in memory. A transaction's writes apply when its block ends normally and
    are dropped when it raises, like PostgreSQL's; `steps` records what ran, in order."""

    plans: dict[str, str] = field(default_factory=lambda: {TENANT: "free", OTHER_TENANT: "free"})
    lattices: dict[str, tuple[str, LatticeRecord]] = field(default_factory=dict)
    fields: dict[str, tuple[int, EncodedField]] = field(default_factory=dict)
    outbox: list[tuple[str, OutboxEvent]] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    clock: int = 0

    def now(self) -> datetime:
        self.clock += 1
        return T0 + timedelta(seconds=self.clock)

    @asynccontextmanager
    async def transaction(
        self, tenant_id: str, *, lock_timeout_s: float | None = None
    ) -> AsyncIterator[FakeStore.Transaction]:
        self.steps.append("begin")
        tx = FakeStore.Transaction(self, tenant_id)
        yield tx
        for apply in tx.writes:
            apply()
        self.steps.append("commit")

    @dataclass
    class Transaction:
        store: FakeStore
        tenant_id: str
        writes: list[object] = field(default_factory=list)

        def _later(self, apply: object) -> None:
            self.writes.append(apply)

        def _mine(self, lattice_id: str) -> LatticeRecord | None:
            owner, record = self.store.lattices.get(lattice_id, (None, None))
            return record if owner == self.tenant_id else None

        async def lock_tenant(self) -> str | None:
            self.store.steps.append("lock")
            return self.store.plans.get(self.tenant_id)

        async def count_lattices(self) -> int:
            self.store.steps.append("count")
            return sum(1 for owner, _ in self.store.lattices.values() if owner == self.tenant_id)

        async def insert(self, lattice: NewLattice, field: EncodedField) -> LatticeRecord:
            self.store.steps.append("insert")
            created = self.store.now()
            record = LatticeRecord(
                id=lattice.id,
                name=lattice.name,
                dimensions=lattice.shape.dimensions,
                size=lattice.shape.size,
                vertex_count=lattice.shape.vertex_count,
                edge_count=lattice.shape.edge_count,
                version=1,
                checksum=field.checksum,
                blocked_count=field.blocked_count,
                created_at=created,
                updated_at=created,
            )

            def apply() -> None:
                self.store.lattices[lattice.id] = (self.tenant_id, record)
                self.store.fields[lattice.id] = (1, field)

            self._later(apply)
            return record

        async def lock_lattice(self, lattice_id: str) -> LatticeRecord | None:
            self.store.steps.append("lock_lattice")
            return self._mine(lattice_id)

        async def read_field(self, lattice_id: str) -> tuple[int, EncodedField] | None:
            self.store.steps.append("read_field")
            return self.store.fields.get(lattice_id) if self._mine(lattice_id) else None

        async def save_field(self, lattice_id: str, field: EncodedField) -> LatticeRecord:
            self.store.steps.append("save_field")
            record = self._mine(lattice_id)
            assert record is not None
            updated = replace(
                record,
                version=record.version + 1,
                checksum=field.checksum,
                blocked_count=field.blocked_count,
                updated_at=self.store.now(),
            )

            def apply() -> None:
                self.store.lattices[lattice_id] = (self.tenant_id, updated)
                self.store.fields[lattice_id] = (updated.version, field)

            self._later(apply)
            return updated

        async def delete(self, lattice_id: str) -> LatticeRecord | None:
            self.store.steps.append("delete")
            record = self._mine(lattice_id)
            if record is not None:
                self._later(lambda: self.store.lattices.pop(lattice_id))
            return record

        async def add_event(self, event: OutboxEvent) -> None:
            self.store.steps.append(f"event {event.type}")
            self._later(lambda: self.store.outbox.append((self.tenant_id, event)))

    async def get(self, tenant_id: str, lattice_id: str) -> LatticeRecord | None:
        owner, record = self.lattices.get(lattice_id, (None, None))
        return record if owner == tenant_id else None

    async def get_with_field(
        self, tenant_id: str, lattice_id: str
    ) -> tuple[LatticeRecord, EncodedField] | None:
        record = await self.get(tenant_id, lattice_id)
        return None if record is None else (record, self.fields[lattice_id][1])

    async def list_lattices(
        self, tenant_id: str, *, limit: int, after: Cursor | None
    ) -> list[LatticeRecord]:
        mine = sorted(
            (record for owner, record in self.lattices.values() if owner == tenant_id),
            key=lambda r: (r.created_at, r.id),
            reverse=True,
        )
        if after is not None:
            mine = [r for r in mine if (r.created_at, r.id) < (after.created_at, after.id)]
        return mine[:limit]

    async def add_event(self, tenant_id: str, event: OutboxEvent) -> bool:
        self.outbox.append((tenant_id, event))
        return True

    def event_types(self, tenant_id: str = TENANT) -> list[str]:
        return [event.type for owner, event in self.outbox if owner == tenant_id]


@dataclass
class InlineCompute:
    """ComputeBackend running the engine's functions in a thread of this process.

    `failure`, when set, is raised by the next computation instead of running it.
    """

    failure: BaseException | None = None
    calls: list[str] = field(default_factory=list)
    deadlines: list[float | None] = field(default_factory=list)

    def _start(self, kind: str, deadline_s: float | None) -> float:
        self.calls.append(kind)
        self.deadlines.append(deadline_s)
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        return time.perf_counter()

    async def make_field(
        self, grid: Grid, fill: Fill, *, deadline_s: float | None = None, share: Share | None = None
    ) -> FieldOutcome:
        check_fill(grid, fill)
        started = self._start("fill", deadline_s)
        values = await asyncio.to_thread(make_field, grid, fill)
        return FieldOutcome(values, "cpu", (time.perf_counter() - started) * 1000)

    async def transform(
        self,
        grid: Grid,
        field: FieldLike,
        op: TransformOp,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> TransformOutcome:
        started = self._start("transform", deadline_s)
        copy = np.array(field, dtype=np.float32)
        inverse = await asyncio.to_thread(apply_transform, grid, copy, op)
        return TransformOutcome(copy, inverse, "cpu", (time.perf_counter() - started) * 1000)

    async def find_path(
        self,
        grid: Grid,
        field: FieldLike,
        start: Sequence[int],
        end: Sequence[int],
        algorithm: Algorithm = Algorithm.AUTO,
        cost: Cost = Cost.UNIT,
        *,
        blocked_count: int | None = None,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> PathOutcome:
        started = self._start("path", deadline_s)
        copy = np.array(field, dtype=np.float32)
        result = await asyncio.to_thread(
            lambda: find_path(
                grid,
                copy,
                start,
                end,
                algorithm=algorithm,
                cost=cost,
                blocked_count=blocked_count,
            )
        )
        return PathOutcome(result, "cpu", (time.perf_counter() - started) * 1000)

    async def analyze(
        self,
        grid: Grid,
        field: FieldLike,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> AnalysisOutcome:
        started = self._start("analysis", deadline_s)
        copy = np.array(field, dtype=np.float32)
        analysis = await asyncio.to_thread(analyze, grid, copy)
        return AnalysisOutcome(analysis, "cpu", (time.perf_counter() - started) * 1000)


def domain(
    store: FakeStore,
    compute: InlineCompute | None = None,
    *,
    cache_bytes: int = 1 << 20,
    max_compute_s: float | None = 30.0,
) -> Domain:
    """Catalog and operations over the fakes, sharing one cache and event log."""
    backend = compute if compute is not None else InlineCompute()
    catalog = Catalog(
        store, backend, FieldCache(cache_bytes), EventLog(store), max_compute_s=max_compute_s
    )
    return Domain.of(catalog)
