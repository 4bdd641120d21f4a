"""Field reads, transforms, paths and analyses over the in-memory store and the inline engine."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from services.common.errors import (
    Aborted,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.lattice.engine.field import checksum
from services.lattice.engine.fills import ConstantFill, RandomFill, ValuesFill
from services.lattice.engine.paths import Algorithm, Cost
from services.lattice.engine.transforms import Flip, Normalize, Offset, Rotate, Scale, Xor
from services.lattice.fields import FieldCorruptedError
from services.lattice.records import LatticeRecord
from services.lattice.server import Domain

from .support import OTHER_TENANT, FakeStore, InlineCompute, domain, principal


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def compute() -> InlineCompute:
    return InlineCompute()


@pytest.fixture
def lattice(store: FakeStore, compute: InlineCompute) -> Domain:
    return domain(store, compute)


async def create(lattice: Domain, values: list[float], dimensions: int = 1) -> LatticeRecord:
    raw = np.array(values, dtype="<f4").tobytes()
    size = round(len(values) ** (1 / dimensions))
    return await lattice.catalog.create(
        principal(), name="t", dimensions=dimensions, size=size, fill=ValuesFill(raw)
    )


async def test_read_field_pages(lattice: Domain) -> None:
    record = await create(lattice, [float(i) for i in range(10)])
    ops = lattice.operations
    whole = await ops.read_field(principal(), record.id, offset=0, limit=0)
    assert (whole.offset, whole.count, whole.version) == (0, 10, 1)
    assert np.frombuffer(whole.values, "<f4").tolist() == list(range(10))
    tail = await ops.read_field(principal(), record.id, offset=7, limit=5)
    assert (tail.count, np.frombuffer(tail.values, "<f4").tolist()) == (3, [7.0, 8.0, 9.0])


@pytest.mark.parametrize(
    ("offset", "limit", "fields"),
    [
        (-1, 0, ["offset"]),
        (0, -1, ["limit"]),
        (0, 1_048_577, ["limit"]),
        (-5, 2_000_000, ["offset", "limit"]),
        (10, 1, ["offset"]),
    ],
)
async def test_read_field_validation(
    lattice: Domain, offset: int, limit: int, fields: list[str]
) -> None:
    record = await create(lattice, [1.0] * 10)
    with pytest.raises(InvalidArgument) as caught:
        await lattice.operations.read_field(principal(), record.id, offset=offset, limit=limit)
    assert [name for name, _ in caught.value.violations] == fields


@pytest.mark.parametrize(
    "op",
    [Xor(0x1234), Rotate(0, 1, 1), Rotate(1, 0, 3), Flip(0), Flip(1)],
    ids=str,
)
async def test_exact_transforms_and_their_inverses(
    lattice: Domain, store: FakeStore, op: object
) -> None:
    record = await create(lattice, [float(i) for i in range(16)], dimensions=2)
    ops = lattice.operations
    done = await ops.transform(principal(), record.id, op)  # type: ignore[arg-type]
    assert done.lattice.version == 2
    assert done.lattice.checksum != record.checksum
    assert store.fields[record.id][0] == 2
    undone = await ops.transform(principal(), record.id, done.inverse)
    assert undone.lattice.version == 3
    assert undone.lattice.checksum == record.checksum
    assert store.event_types() == ["lattice.created", "lattice.transformed", "lattice.transformed"]
    event = store.outbox[1][1]
    assert event.data["version"] == 2
    assert event.data["checksum"] == done.lattice.checksum
    assert set(event.data["op"]) == {type(op).__name__.lower()}


@pytest.mark.parametrize("op", [Scale(2.0), Offset(1.5), Normalize()], ids=str)
async def test_arithmetic_transforms_undo_to_rounding(lattice: Domain, op: object) -> None:
    values = [0.5, 1.0, 2.0, 3.5, float("inf"), 7.25, 0.0, 4.0, 9.0]
    record = await create(lattice, values, dimensions=2)
    ops = lattice.operations
    done = await ops.transform(principal(), record.id, op)  # type: ignore[arg-type]
    await ops.transform(principal(), record.id, done.inverse)
    back = await ops.read_field(principal(), record.id, offset=0, limit=0)
    np.testing.assert_allclose(np.frombuffer(back.values, "<f4"), values, rtol=1e-6)


async def test_transform_keeps_blocked_count_current(lattice: Domain, store: FakeStore) -> None:
    record = await create(lattice, [1.0, 2.0, 3.0, 4.0])
    assert record.blocked_count == 0
    done = await lattice.operations.transform(principal(), record.id, Xor(0x8000_0000))
    assert done.lattice.blocked_count == 4
    done = await lattice.operations.transform(principal(), record.id, Scale(-1.0))
    assert done.lattice.blocked_count == 0


async def test_if_version(lattice: Domain, store: FakeStore) -> None:
    record = await create(lattice, [1.0] * 4)
    ops = lattice.operations
    await ops.transform(principal(), record.id, Flip(0), if_version=1)
    with pytest.raises(Aborted):
        await ops.transform(principal(), record.id, Flip(0), if_version=1)
    with pytest.raises(InvalidArgument) as caught:
        await ops.transform(principal(), record.id, Flip(0), if_version=0)
    assert caught.value.field == "if_version"
    assert (await lattice.catalog.get(principal(), record.id)).version == 2
    assert store.event_types().count("lattice.transformed") == 1


async def test_transform_validation(lattice: Domain) -> None:
    record = await create(lattice, [1.0] * 4)
    ops = lattice.operations
    cases = [
        (None, ["op"]),
        (Flip(1), ["flip.axis"]),
        (Rotate(0, 1, 1), ["rotate.axis_b"]),
        (Scale(0.0), ["scale.factor"]),
        (Offset(float("nan")), ["offset.value"]),
    ]
    for op, fields in cases:
        with pytest.raises(InvalidArgument) as caught:
            await ops.transform(principal(), record.id, op)
        assert [name for name, _ in caught.value.violations] == fields
    assert (await lattice.catalog.get(principal(), record.id)).version == 1
    huge = await create(lattice, [1e38] * 4)
    with pytest.raises(FailedPrecondition):
        await ops.transform(principal(), huge.id, Scale(1024.0))
    assert (await lattice.catalog.get(principal(), huge.id)).version == 1


async def test_another_tenants_lattice_is_not_found(lattice: Domain) -> None:
    record = await create(lattice, [1.0] * 4)
    other = principal(OTHER_TENANT)
    ops = lattice.operations
    calls = [
        ops.read_field(other, record.id, offset=0, limit=0),
        ops.transform(other, record.id, Flip(0)),
        ops.find_path(
            other, record.id, start=[0], end=[3], algorithm=Algorithm.BFS, cost=Cost.UNIT
        ),
        ops.analyze(other, record.id),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            await call


@pytest.mark.parametrize("failure", [DeadlineExceeded("slow"), Unavailable("worker died")])
async def test_a_failed_transform_changes_nothing_and_is_announced(
    lattice: Domain, store: FakeStore, compute: InlineCompute, failure: Exception
) -> None:
    record = await create(lattice, [1.0] * 4)
    compute.failure = failure
    with pytest.raises(type(failure)):
        await lattice.operations.transform(principal(), record.id, Flip(0))
    assert (await lattice.catalog.get(principal(), record.id)).version == 1
    assert store.event_types() == ["lattice.created", "computation.failed"]
    data = store.outbox[-1][1].data
    assert (data["operation"], data["lattice_id"]) == ("transform", record.id)


async def test_refusals_are_not_announced_as_failures(lattice: Domain, store: FakeStore) -> None:
    record = await create(lattice, [1.0, float("inf"), 1.0])
    with pytest.raises(NotFound):
        await lattice.operations.find_path(
            principal(), record.id, start=[0], end=[2], algorithm=Algorithm.BFS, cost=Cost.UNIT
        )
    with pytest.raises(InvalidArgument):
        await lattice.operations.transform(principal(), record.id, Flip(3))
    assert store.event_types() == ["lattice.created"]


async def test_concurrent_transforms_serialise(lattice: Domain) -> None:
    record = await create(lattice, [float(i) for i in range(16)], dimensions=2)
    keys = [1 << bit for bit in range(12)]
    ops = lattice.operations
    await asyncio.gather(*(ops.transform(principal(), record.id, Xor(key)) for key in keys))
    assert (await lattice.catalog.get(principal(), record.id)).version == 1 + len(keys)
    combined = 0
    for key in keys:
        combined ^= key
    expected = (np.arange(16, dtype="<f4").view(np.uint32) ^ np.uint32(combined)).view("<f4")
    now = await ops.read_field(principal(), record.id, offset=0, limit=0)
    assert now.values == expected.tobytes()


async def test_the_field_is_read_from_storage_once_then_cached(
    store: FakeStore, compute: InlineCompute
) -> None:
    first = domain(store, compute)
    record = await create(first, [float(i) for i in range(9)], dimensions=2)
    # A second replica: its own cache, empty.
    second = domain(store, compute)
    store.steps.clear()
    await second.operations.transform(principal(), record.id, Flip(0))
    assert "read_field" in store.steps
    store.steps.clear()
    await second.operations.transform(principal(), record.id, Flip(0))
    assert "read_field" not in store.steps


async def test_a_corrupted_field_is_refused(lattice: Domain, store: FakeStore) -> None:
    record = await create(lattice, [1.0, 2.0, 3.0, 4.0])
    version, encoded = store.fields[record.id]
    store.fields[record.id] = (version, replace(encoded, checksum="0" * 32))
    fresh = domain(store)
    with pytest.raises(FieldCorruptedError):
        await fresh.operations.read_field(principal(), record.id, offset=0, limit=0)


async def test_paths(lattice: Domain, store: FakeStore) -> None:
    values = [1.0] * 25
    values[12] = float("inf")
    record = await create(lattice, values, dimensions=2)
    ops = lattice.operations
    for algorithm in Algorithm:
        found = await ops.find_path(
            principal(), record.id, start=[0, 0], end=[4, 4], algorithm=algorithm, cost=Cost.UNIT
        )
        assert found.result.hops == 8
        assert found.result.vertices[0] == 0
        assert found.result.vertices[-1] == 24
        assert found.result.checksum_before == found.result.checksum_after == record.checksum
    found = await ops.find_path(
        principal(), record.id, start=[0, 0], end=[4, 4], algorithm=Algorithm.AUTO, cost=Cost.FIELD
    )
    assert found.result.cost == 8.0
    assert store.event_types().count("path.computed") == len(Algorithm) + 1


async def test_auto_uses_the_stored_blocked_count(lattice: Domain) -> None:
    record = await create(lattice, [1.0] * 100, dimensions=2)
    found = await lattice.operations.find_path(
        principal(), record.id, start=[0, 0], end=[9, 9], algorithm=Algorithm.AUTO, cost=Cost.UNIT
    )
    assert found.result.method == "closed_form"


@pytest.mark.parametrize(
    ("start", "end", "algorithm", "cost", "fields"),
    [
        ([0], [1, 1], Algorithm.AUTO, Cost.UNIT, ["start"]),
        ([0, 0], [1, 2, 3], Algorithm.AUTO, Cost.UNIT, ["end"]),
        ([0, 5], [9, 9], Algorithm.AUTO, Cost.UNIT, ["start", "end"]),
        ([0, 0], [1, 1], Algorithm.BFS, Cost.FIELD, ["algorithm"]),
        ([0, 0], [1, 1], Algorithm.CATALYTIC, Cost.FIELD, ["algorithm"]),
        ([2, 2], [1, 1], Algorithm.AUTO, Cost.UNIT, ["start"]),  # blocked: the engine says so
    ],
)
async def test_path_validation(
    lattice: Domain,
    compute: InlineCompute,
    start: list[int],
    end: list[int],
    algorithm: Algorithm,
    cost: Cost,
    fields: list[str],
) -> None:
    values = [1.0] * 25
    values[12] = -1.0
    record = await create(lattice, values, dimensions=2)
    compute.calls.clear()
    with pytest.raises(InvalidArgument) as caught:
        await lattice.operations.find_path(
            principal(), record.id, start=start, end=end, algorithm=algorithm, cost=cost
        )
    assert [name for name, _ in caught.value.violations] == fields


async def test_analysis(lattice: Domain) -> None:
    record = await lattice.catalog.create(
        principal(), name="a", dimensions=2, size=10, fill=RandomFill(3, 0.0, 1.0, 0.3)
    )
    analysed = await lattice.operations.analyze(principal(), record.id)
    assert analysed.analysis.vertex_count == 100
    assert analysed.analysis.blocked_count == record.blocked_count
    assert analysed.device == "cpu"


async def test_created_field_matches_the_engine(lattice: Domain) -> None:
    record = await lattice.catalog.create(
        principal(), name="c", dimensions=3, size=4, fill=ConstantFill(2.5)
    )
    part = await lattice.operations.read_field(principal(), record.id, offset=0, limit=0)
    assert part.values == np.full(64, 2.5, "<f4").tobytes()
    assert checksum(part.values) == record.checksum
