"""Plan limits: vertices per lattice and lattices per tenant."""

from __future__ import annotations

import pytest

from services.common.errors import ResourceExhausted
from services.lattice.engine.shapes import MAX_VERTICES
from services.lattice.plans import PLAN_LIMITS, check_lattice_count, check_vertex_limit, limits_for


@pytest.mark.parametrize(
    ("plan", "max_vertices", "max_lattices"),
    [
        ("free", 10_000, 5),
        ("starter", 100_000, 50),
        ("professional", 1_000_000, 500),
        ("enterprise", MAX_VERTICES, None),
    ],
)
def test_limits_per_plan(plan: str, max_vertices: int, max_lattices: int | None) -> None:
    limits = PLAN_LIMITS[plan]
    assert (limits.max_vertices, limits.max_lattices) == (max_vertices, max_lattices)
    check_vertex_limit(plan, max_vertices)
    with pytest.raises(ResourceExhausted) as caught:
        check_vertex_limit(plan, max_vertices + 1)
    assert plan in caught.value.message
    assert f"{max_vertices:,}" in caught.value.message


@pytest.mark.parametrize(("plan", "limit"), [("free", 5), ("starter", 50), ("professional", 500)])
def test_lattice_count_limit(plan: str, limit: int) -> None:
    check_lattice_count(plan, limit - 1)
    for existing in (limit, limit + 3):
        with pytest.raises(ResourceExhausted) as caught:
            check_lattice_count(plan, existing)
        assert plan in caught.value.message
        assert str(limit) in caught.value.message


def test_enterprise_has_no_lattice_count_limit() -> None:
    check_lattice_count("enterprise", 10**9)


def test_an_unknown_plan_gets_the_free_limits() -> None:
    assert limits_for("platinum") == PLAN_LIMITS["free"]
