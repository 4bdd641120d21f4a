"""Working with a lattice's field: read it, transform it, find paths in it, analyse it.

Every computation runs on the compute backend (the engine's Router: CPU worker pool or GPU),
within the caller's deadline, and is counted in the metrics. Transforms are atomic: the
lattice row is locked, the new field, version and checksum are written and the event is queued
in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from services.common.context import Principal
from services.common.errors import (
    Aborted,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.lattice import events
from services.lattice.cache import FieldCache
from services.lattice.deadlines import DEADLINE_PASSED, Deadline
from services.lattice.engine.analysis import Analysis
from services.lattice.engine.backends import (
    AnalysisOutcome,
    ComputeBackend,
    FieldLike,
    FieldOutcome,
    PathOutcome,
    TransformOutcome,
)
from services.lattice.engine.fair_queue import Share
from services.lattice.engine.fills import Fill
from services.lattice.engine.geometry import Grid
from services.lattice.engine.paths import Algorithm, Cost, PathResult
from services.lattice.engine.transforms import TransformOp, validate
from services.lattice.events import EventLog
from services.lattice.fields import decode_field, encode_field
from services.lattice.loader import FieldLoader
from services.lattice.metrics import observed
from services.lattice.plans import PlanLookup, share_of
from services.lattice.records import LATTICE_NOT_FOUND, LatticeRecord, LatticeStore, parse_id

DEFAULT_FIELD_LIMIT = 65_536
MAX_FIELD_LIMIT = 1_048_576
FIELD_ONLY_UNIT = (Algorithm.BFS, Algorithm.CATALYTIC)


@dataclass(frozen=True)
class FieldSlice:
    """Raw little-endian float32 values of vertices offset .. offset + count - 1."""

    values: bytes
    offset: int
    count: int
    version: int


@dataclass(frozen=True)
class Transformed:
    """A committed transform: the lattice at its new version and the op that undoes it."""

    lattice: LatticeRecord
    inverse: TransformOp
    device: str
    elapsed_ms: float


@dataclass(frozen=True)
class FoundPath:
    """An optimal path on the lattice at `lattice.version`."""

    lattice: LatticeRecord
    result: PathResult
    device: str
    elapsed_ms: float


@dataclass(frozen=True)
class Analysed:
    lattice: LatticeRecord
    analysis: Analysis
    device: str
    elapsed_ms: float


class NoCompute:
    """The ComputeBackend of a server started without one (metadata only: create, list, get
    and delete of stored lattices work; anything that computes is Unavailable)."""

    MESSAGE = "this lattice server has no compute backend"

    async def make_field(
        self, grid: Grid, fill: Fill, *, deadline_s: float | None = None, share: Share | None = None
    ) -> FieldOutcome:
        raise Unavailable(self.MESSAGE)

    async def transform(
        self,
        grid: Grid,
        field: FieldLike,
        op: TransformOp,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> TransformOutcome:
        raise Unavailable(self.MESSAGE)

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
        raise Unavailable(self.MESSAGE)

    async def analyze(
        self,
        grid: Grid,
        field: FieldLike,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> AnalysisOutcome:
        raise Unavailable(self.MESSAGE)


class KeyedLocks:
    """One asyncio lock per key, alive while someone holds or waits for it.

    Transforms of one lattice on one replica queue here rather than each holding a database
    connection while it waits for the row lock.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str, deadline: Deadline) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            try:
                async with asyncio.timeout(deadline.left()):
                    await lock.acquire()
            except TimeoutError:
                raise DeadlineExceeded(DEADLINE_PASSED) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def field_range(offset: int, limit: int) -> int:
    """The number of values asked for; InvalidArgument naming `offset` or `limit`."""
    violations: list[tuple[str, str]] = []
    if offset < 0:
        violations.append(("offset", "must be at least 0"))
    if limit < 0 or limit > MAX_FIELD_LIMIT:
        violations.append(
            ("limit", f"must be 0 (default {DEFAULT_FIELD_LIMIT:,}) to {MAX_FIELD_LIMIT:,}")
        )
    if violations:
        raise InvalidArgument.of(violations)
    return limit or DEFAULT_FIELD_LIMIT


def path_violations(
    record: LatticeRecord,
    start: Sequence[int],
    end: Sequence[int],
    algorithm: Algorithm,
    cost: Cost,
) -> list[tuple[str, str]]:
    """What the engine would refuse about a path request, found before any field is loaded
    (blocked endpoints need the field: the engine reports those)."""
    violations: list[tuple[str, str]] = []
    grid = record.grid
    for name, coordinates in (("start", start), ("end", end)):
        try:
            grid.index_of(coordinates, field=name)
        except InvalidArgument as error:
            violations += error.violations
    if cost is Cost.FIELD and algorithm in FIELD_ONLY_UNIT:
        violations.append(
            (
                "algorithm",
                f"{algorithm.value} needs cost UNIT; use DIJKSTRA, ASTAR or AUTO for FIELD cost",
            )
        )
    return violations


class LatticeOperations:
    """Field reads, transforms, paths and analyses of a tenant's lattices."""

    def __init__(
        self,
        store: LatticeStore,
        compute: ComputeBackend,
        cache: FieldCache,
        event_log: EventLog,
        *,
        max_compute_s: float | None = None,
        plans: PlanLookup | None = None,
    ) -> None:
        self._store = store
        self._compute = compute
        self._cache = cache
        self._loader = FieldLoader(store, cache)
        self._events = event_log
        self._max_compute_s = max_compute_s
        self._plans = plans
        self._transforming = KeyedLocks()

    async def read_field(
        self, principal: Principal, lattice_id: str, *, offset: int, limit: int
    ) -> FieldSlice:
        """Up to `limit` values from `offset`, in vertex-index order."""
        lattice_id = parse_id(lattice_id)
        wanted = field_range(offset, limit)
        record = await self._loader.record(principal.tenant_id, lattice_id)
        if offset >= record.vertex_count:
            raise InvalidArgument(
                "offset", f"must be below the lattice's vertex_count, {record.vertex_count:,}"
            )
        record, field = await self._loader.field_for(principal.tenant_id, record)
        count = min(wanted, record.vertex_count - offset)
        values = field[offset : offset + count].tobytes()
        return FieldSlice(values=values, offset=offset, count=count, version=record.version)

    async def transform(
        self,
        principal: Principal,
        lattice_id: str,
        op: TransformOp | None,
        *,
        if_version: int | None = None,
        deadline_s: float | None = None,
    ) -> Transformed:
        """Applies `op` to the current field and commits the new version, or changes nothing.

        Concurrent transforms of one lattice serialise on its row lock (and, within a replica,
        on an in-process lock first); with `if_version` a stale caller gets Aborted.
        """
        lattice_id = parse_id(lattice_id)
        if op is None:
            raise InvalidArgument(
                "op", "exactly one of xor, rotate, flip, scale, offset, normalize must be set"
            )
        if if_version is not None and if_version < 1:
            raise InvalidArgument("if_version", "must be at least 1 (versions start at 1)")
        tenant = principal.tenant_id
        deadline = Deadline.start(deadline_s, self._max_compute_s)
        share = await share_of(self._plans, tenant)
        async with self._transforming.hold(lattice_id, deadline):
            try:
                async with self._store.transaction(tenant, lock_timeout_s=deadline.left()) as tx:
                    record = await tx.lock_lattice(lattice_id)
                    if record is None:
                        raise NotFound(LATTICE_NOT_FOUND)
                    validate(record.grid, op)
                    if if_version is not None and record.version != if_version:
                        raise Aborted(
                            f"the lattice is at version {record.version}, not {if_version};"
                            " read it again and retry"
                        )
                    field = self._cache.get(record.id, record.version)
                    if field is None:
                        stored = await tx.read_field(lattice_id)
                        if stored is None or stored[0] != record.version:
                            raise RuntimeError("the stored field is not at the lattice's version")
                        field = await asyncio.to_thread(
                            decode_field, stored[1], record.vertex_count
                        )
                    async with observed("transform", events.op_name(op)) as observation:
                        outcome = await self._compute.transform(
                            record.grid, field, op, deadline_s=deadline.left(), share=share
                        )
                        observation.device = outcome.device
                        observation.elapsed_ms = outcome.elapsed_ms
                    encoded = await asyncio.to_thread(encode_field, outcome.field)
                    updated = await tx.save_field(lattice_id, encoded)
                    await tx.add_event(
                        events.lattice_transformed(
                            updated, op, outcome.inverse, outcome.device, outcome.elapsed_ms
                        )
                    )
            except BaseException as exc:
                await self._events.failure(tenant, "transform", lattice_id, deadline.explain(exc))
                raise
        self._events.written()
        self._cache.put(updated.id, updated.version, outcome.field)
        return Transformed(updated, outcome.inverse, outcome.device, outcome.elapsed_ms)

    async def find_path(
        self,
        principal: Principal,
        lattice_id: str,
        *,
        start: Sequence[int],
        end: Sequence[int],
        algorithm: Algorithm,
        cost: Cost,
        deadline_s: float | None = None,
    ) -> FoundPath:
        """An optimal path on the current field; the field itself never changes (CATALYTIC
        borrows the compute backend's private copy of it and restores that)."""
        lattice_id = parse_id(lattice_id)
        tenant = principal.tenant_id
        deadline = Deadline.start(deadline_s, self._max_compute_s)
        record = await self._loader.record(tenant, lattice_id)
        violations = path_violations(record, start, end, algorithm, cost)
        if violations:
            raise InvalidArgument.of(violations)
        record, field = await self._loader.field_for(tenant, record)
        share = await share_of(self._plans, tenant)
        try:
            async with observed("path", algorithm.value) as observation:
                outcome = await self._compute.find_path(
                    record.grid,
                    field,
                    start,
                    end,
                    algorithm,
                    cost,
                    blocked_count=record.blocked_count,
                    deadline_s=deadline.left(),
                    share=share,
                )
                observation.algorithm = outcome.result.algorithm.value
                observation.device = outcome.device
                observation.elapsed_ms = outcome.elapsed_ms
            result = outcome.result
            # The backend searched a copy; these prove the copy was the stored field, and that
            # CATALYTIC gave it back bit for bit.
            if not result.checksum_before == result.checksum_after == record.checksum:
                raise RuntimeError("the searched field does not match the lattice's checksum")
        except BaseException as exc:
            await self._events.failure(tenant, "path", lattice_id, deadline.explain(exc))
            raise
        await self._events.standalone(
            tenant,
            events.path_computed(
                record, list(start), list(end), cost, result, outcome.device, outcome.elapsed_ms
            ),
        )
        return FoundPath(record, result, outcome.device, outcome.elapsed_ms)

    async def analyze(
        self,
        principal: Principal,
        lattice_id: str,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> Analysed:
        """Counts, components, diameter and memory of the current field."""
        lattice_id = parse_id(lattice_id)
        tenant = principal.tenant_id
        deadline = Deadline.start(deadline_s, self._max_compute_s)
        record, field = await self._loader.load(tenant, lattice_id)
        share = await share_of(self._plans, tenant)
        try:
            async with observed("analysis", "") as observation:
                outcome = await self._compute.analyze(
                    record.grid, field, deadline_s=deadline.left(), share=share
                )
                observation.device, observation.elapsed_ms = outcome.device, outcome.elapsed_ms
        except BaseException as exc:
            await self._events.failure(tenant, "analysis", lattice_id, deadline.explain(exc))
            raise
        return Analysed(record, outcome.analysis, outcome.device, outcome.elapsed_ms)
