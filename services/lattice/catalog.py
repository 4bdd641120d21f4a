"""Creating, reading, listing and deleting lattices: the lattice domain, free of gRPC and SQL."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from services.common import paging
from services.common.context import Principal
from services.common.errors import InvalidArgument, NotFound
from services.common.paging import Cursor
from services.lattice import events, plans
from services.lattice.cache import FieldCache
from services.lattice.deadlines import Deadline
from services.lattice.engine.backends import ComputeBackend
from services.lattice.engine.fills import ConstantFill, Fill, RandomFill, check_fill
from services.lattice.engine.geometry import Grid
from services.lattice.engine.shapes import Shape, shape_violations
from services.lattice.events import EventLog
from services.lattice.fields import encode_field
from services.lattice.metrics import observed
from services.lattice.operations import LatticeOperations, NoCompute
from services.lattice.plans import PlanLookup
from services.lattice.records import (
    LATTICE_NOT_FOUND,
    LatticeRecord,
    LatticeStore,
    LatticeTransaction,
    NewLattice,
    parse_id,
)

MAX_NAME_LENGTH = 100
TENANT_NOT_FOUND = "tenant not found"


@dataclass(frozen=True)
class LatticePage:
    """One page of a listing."""

    lattices: list[LatticeRecord]
    next_page_token: str


def name_violations(name: str) -> list[tuple[str, str]]:
    """(field, problem) pairs for a lattice name, judged after stripping blanks."""
    if not 1 <= len(name.strip()) <= MAX_NAME_LENGTH:
        return [("name", f"must be 1 to {MAX_NAME_LENGTH} characters")]
    return []


def fill_kind(fill: Fill) -> str:
    """`constant`, `random` or `values`: the fill's JSON key and metrics label."""
    if isinstance(fill, ConstantFill):
        return "constant"
    return "random" if isinstance(fill, RandomFill) else "values"


async def _check_limits(tx: LatticeTransaction, vertex_count: int) -> str:
    """The tenant's plan, once its limits allow one more lattice of `vertex_count` vertices."""
    plan = await tx.lock_tenant()
    if plan is None:
        raise NotFound(TENANT_NOT_FOUND)
    plans.check_vertex_limit(plan, vertex_count)
    # Counted under the tenant lock, so concurrent creates cannot overshoot the limit.
    plans.check_lattice_count(plan, await tx.count_lattices())
    return plan


class Catalog:
    """Lattice life cycle: create (with its field), get, list, delete; each change announced."""

    def __init__(
        self,
        store: LatticeStore,
        compute: ComputeBackend | None = None,
        cache: FieldCache | None = None,
        event_log: EventLog | None = None,
        *,
        max_compute_s: float | None = None,
        plans: PlanLookup | None = None,
    ) -> None:
        """Without `compute` nothing can be created (Unavailable); without `cache` fields are
        not cached; without `event_log` events are written but nobody wakes the relay early;
        without `plans` every tenant computes with the smallest plan's share of the pool."""
        self._store = store
        self._compute = compute if compute is not None else NoCompute()
        self._cache = cache if cache is not None else FieldCache(0)
        self._events = event_log if event_log is not None else EventLog(store)
        self._max_compute_s = max_compute_s
        self._plans = plans

    def operations(self) -> LatticeOperations:
        """The field operations over the same store, compute backend, cache and event log."""
        return LatticeOperations(
            self._store,
            self._compute,
            self._cache,
            self._events,
            max_compute_s=self._max_compute_s,
            plans=self._plans,
        )

    async def create(
        self,
        principal: Principal,
        *,
        name: str,
        dimensions: int,
        size: int,
        fill: Fill | None,
        deadline_s: float | None = None,
    ) -> LatticeRecord:
        """Validates, checks the plan's limits, then builds and stores the field, in that order:
        nothing is allocated for a request that a limit refuses."""
        violations = name_violations(name) + shape_violations(dimensions, size)
        if violations:
            raise InvalidArgument.of(violations)
        shape = Shape(dimensions=dimensions, size=size)
        grid = Grid(dimensions, size)
        if fill is None:
            raise InvalidArgument("fill", "exactly one of constant, random or values must be set")
        check_fill(grid, fill)
        deadline = Deadline.start(deadline_s, self._max_compute_s)
        tenant = principal.tenant_id
        async with self._store.transaction(tenant) as tx:
            plan = await _check_limits(tx, shape.vertex_count)
        # The field is built outside any transaction (no connection is held while it computes),
        # so the limits are checked again, atomically with the insert, below.
        try:
            async with observed("fill", fill_kind(fill)) as observation:
                outcome = await self._compute.make_field(
                    grid,
                    fill,
                    deadline_s=deadline.left(),
                    share=plans.compute_share(tenant, plan),
                )
                observation.device, observation.elapsed_ms = outcome.device, outcome.elapsed_ms
        except BaseException as exc:
            await self._events.failure(tenant, "create", "", deadline.explain(exc))
            raise
        encoded = await asyncio.to_thread(encode_field, outcome.field)
        lattice = NewLattice(id=str(uuid.uuid4()), name=name.strip(), shape=shape)
        async with self._store.transaction(tenant) as tx:
            await _check_limits(tx, shape.vertex_count)
            record = await tx.insert(lattice, encoded)
            await tx.add_event(events.lattice_created(record))
        self._events.written()
        self._cache.put(record.id, record.version, outcome.field)
        return record

    async def get(self, principal: Principal, lattice_id: str) -> LatticeRecord:
        """The lattice; another tenant's lattice is NotFound like a missing one."""
        record = await self._store.get(principal.tenant_id, parse_id(lattice_id))
        if record is None:
            raise NotFound(LATTICE_NOT_FOUND)
        return record

    async def list_page(
        self, principal: Principal, *, page_size: int, page_token: str
    ) -> LatticePage:
        """One page, newest first, and the token of the next page ('' on the last page)."""
        limit = paging.page_size(page_size)
        after = paging.decode_page_token(page_token)
        # One extra row tells whether another page follows without a second query.
        rows = await self._store.list_lattices(principal.tenant_id, limit=limit + 1, after=after)
        page, more = rows[:limit], len(rows) > limit
        token = paging.encode_page_token(Cursor(page[-1].created_at, page[-1].id)) if more else ""
        return LatticePage(lattices=page, next_page_token=token)

    async def delete(self, principal: Principal, lattice_id: str) -> None:
        """Deletes the lattice and its field, and announces it in the same transaction."""
        lattice_id = parse_id(lattice_id)
        async with self._store.transaction(principal.tenant_id) as tx:
            record = await tx.delete(lattice_id)
            if record is None:
                raise NotFound(LATTICE_NOT_FOUND)
            await tx.add_event(events.lattice_deleted(record))
        self._events.written()
        self._cache.discard(lattice_id)
