"""The lattice life cycle over an in-memory store: order of checks, limits, ids, paging, events."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from services.common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from services.lattice.catalog import Catalog, name_violations
from services.lattice.engine.field import checksum
from services.lattice.engine.fills import ConstantFill, RandomFill, ValuesFill, make_field
from services.lattice.engine.geometry import Grid

from .support import OTHER_TENANT, TENANT, FakeStore, InlineCompute, domain, principal


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def compute() -> InlineCompute:
    return InlineCompute()


@pytest.fixture
def catalog(store: FakeStore, compute: InlineCompute) -> Catalog:
    return domain(store, compute).catalog


async def test_create_constant(catalog: Catalog, store: FakeStore) -> None:
    record = await catalog.create(
        principal(), name="  grid ", dimensions=2, size=10, fill=ConstantFill(1.0)
    )
    assert (record.name, record.vertex_count, record.edge_count, record.version) == (
        "grid",
        100,
        180,
        1,
    )
    assert record.blocked_count == 0
    # Limits checked, then the field built outside any transaction, then checked again and
    # inserted with its event atomically.
    assert store.steps == [
        "begin",
        "lock",
        "count",
        "commit",
        "begin",
        "lock",
        "count",
        "insert",
        "event lattice.created",
        "commit",
    ]
    assert store.fields[record.id][1].checksum == record.checksum
    assert store.event_types() == ["lattice.created"]
    (_, event), *_ = store.outbox
    assert event.data["lattice_id"] == record.id
    assert event.data["version"] == 1


async def test_create_random_uses_the_engine_fill(catalog: Catalog) -> None:
    fill = RandomFill(seed=7, low=0.0, high=1.0, blocked_fraction=0.25)
    record = await catalog.create(principal(), name="r", dimensions=2, size=20, fill=fill)
    expected = make_field(Grid(2, 20), fill)
    assert record.checksum == checksum(expected)
    assert record.blocked_count == int(np.count_nonzero(np.isinf(expected)))
    assert 0 < record.blocked_count < 400


async def test_create_values_counts_blocked_vertices(catalog: Catalog) -> None:
    values = np.array([1.0, -0.0, np.nan, np.inf], dtype="<f4").tobytes()
    record = await catalog.create(
        principal(), name="v", dimensions=1, size=4, fill=ValuesFill(values)
    )
    assert (record.vertex_count, record.blocked_count) == (4, 3)
    assert record.checksum == checksum(values)


async def test_invalid_requests_never_reach_the_store(catalog: Catalog, store: FakeStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await catalog.create(principal(), name="", dimensions=0, size=1, fill=ConstantFill(0))
    assert {name for name, _ in caught.value.violations} == {"name", "dimensions", "size"}
    with pytest.raises(InvalidArgument) as caught:
        await catalog.create(principal(), name="a", dimensions=2, size=3, fill=None)
    assert caught.value.field == "fill"
    with pytest.raises(InvalidArgument) as caught:
        await catalog.create(principal(), name="a", dimensions=2, size=3, fill=ValuesFill(b"1"))
    assert caught.value.field == "values"
    with pytest.raises(InvalidArgument) as caught:
        await catalog.create(
            principal(), name="a", dimensions=2, size=3, fill=RandomFill(1, 2.0, 1.0, 1.5)
        )
    assert {name for name, _ in caught.value.violations} == {
        "random.high",
        "random.blocked_fraction",
    }
    with pytest.raises(InvalidArgument) as caught:
        await catalog.create(principal(), name="a", dimensions=2, size=3, fill=ConstantFill(1e39))
    assert caught.value.field == "constant.value"
    assert store.steps == []


async def test_vertex_limit_is_checked_before_anything_is_allocated(
    catalog: Catalog, store: FakeStore, compute: InlineCompute
) -> None:
    await catalog.create(principal(), name="ok", dimensions=2, size=100, fill=ConstantFill(0))
    store.steps.clear()
    compute.calls.clear()
    with pytest.raises(ResourceExhausted, match=r"free plan.*10,000"):
        await catalog.create(principal(), name="big", dimensions=3, size=22, fill=ConstantFill(0))
    assert store.steps == ["begin", "lock"]
    assert compute.calls == []
    store.plans[TENANT] = "starter"
    await catalog.create(principal(), name="big", dimensions=3, size=22, fill=ConstantFill(0))


async def test_lattice_count_limit(catalog: Catalog) -> None:
    for index in range(5):
        await catalog.create(
            principal(), name=f"l{index}", dimensions=1, size=2, fill=ConstantFill(0)
        )
    with pytest.raises(ResourceExhausted, match="at most 5"):
        await catalog.create(principal(), name="sixth", dimensions=1, size=2, fill=ConstantFill(0))
    # Another tenant's lattices do not count against this one.
    await catalog.create(
        principal(OTHER_TENANT), name="a", dimensions=1, size=2, fill=ConstantFill(0)
    )


async def test_a_failed_fill_is_announced_and_stores_nothing(
    catalog: Catalog, store: FakeStore, compute: InlineCompute
) -> None:
    compute.failure = DeadlineExceeded("too slow")
    with pytest.raises(DeadlineExceeded):
        await catalog.create(
            principal(), name="r", dimensions=2, size=3, fill=RandomFill(1, 0.0, 1.0, 0.0)
        )
    assert store.lattices == {}
    assert store.event_types() == ["computation.failed"]
    assert store.outbox[0][1].data["operation"] == "create"
    assert store.outbox[0][1].data["code"] == "DEADLINE_EXCEEDED"


async def test_unknown_tenant(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        await catalog.create(
            principal(str(uuid.uuid4())), name="a", dimensions=1, size=2, fill=ConstantFill(0)
        )


async def test_get_and_delete(catalog: Catalog, store: FakeStore) -> None:
    record = await catalog.create(principal(), name="a", dimensions=1, size=2, fill=ConstantFill(0))
    assert await catalog.get(principal(), record.id.upper()) == record
    with pytest.raises(NotFound):
        await catalog.get(principal(OTHER_TENANT), record.id)
    with pytest.raises(NotFound):
        await catalog.delete(principal(OTHER_TENANT), record.id)
    await catalog.delete(principal(), record.id)
    with pytest.raises(NotFound):
        await catalog.get(principal(), record.id)
    with pytest.raises(NotFound):
        await catalog.delete(principal(), record.id)
    assert store.event_types() == ["lattice.created", "lattice.deleted"]
    assert store.event_types(OTHER_TENANT) == []


@pytest.mark.parametrize("bad_id", ["", "nope", "123", "g" * 32])
async def test_malformed_ids(catalog: Catalog, bad_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await catalog.get(principal(), bad_id)
    assert caught.value.field == "id"
    with pytest.raises(InvalidArgument):
        await catalog.delete(principal(), bad_id)


async def test_listing_pages_newest_first(catalog: Catalog, store: FakeStore) -> None:
    store.plans[TENANT] = "starter"
    made = [
        await catalog.create(principal(), name=f"l{i}", dimensions=1, size=2, fill=ConstantFill(0))
        for i in range(7)
    ]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await catalog.list_page(principal(), page_size=3, page_token=token)
        seen += [record.id for record in page.lattices]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == [record.id for record in reversed(made)]
    assert pages == 3
    empty = await catalog.list_page(principal(OTHER_TENANT), page_size=0, page_token="")
    assert (empty.lattices, empty.next_page_token) == ([], "")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("  a  ", True),
        ("x" * 100, True),
        ("", False),
        ("   ", False),
        ("x" * 101, False),
    ],
)
def test_name_length_is_judged_after_stripping(name: str, ok: bool) -> None:
    assert (name_violations(name) == []) is ok
