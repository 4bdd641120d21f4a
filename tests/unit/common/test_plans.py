"""The plan catalogue is the one source of the plans' names and limits."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from services.common.plans import BY_NAME, CATALOGUE, FALLBACK_PLAN, PLANS
from services.common.ratelimit import DEFAULT_TENANT_RATES
from services.lattice.engine.shapes import MAX_VERTICES
from services.lattice.plans import PLAN_LIMITS

MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"


def test_the_database_accepts_exactly_the_catalogues_plans() -> None:
    """tenants.plan's CHECK (SQL cannot import the catalogue) names the same plans."""
    sql = (MIGRATIONS / "0001_roles_and_tenancy.sql").read_text()
    check = re.search(r"CHECK \(plan IN \(([^)]*)\)\)", sql)
    assert check is not None
    assert tuple(re.findall(r"'([a-z]+)'", check.group(1))) == PLANS


def test_every_reader_takes_its_figures_from_the_catalogue() -> None:
    assert FALLBACK_PLAN in BY_NAME
    assert set(DEFAULT_TENANT_RATES) == set(PLAN_LIMITS) == set(PLANS)
    for plan in CATALOGUE:
        assert DEFAULT_TENANT_RATES[plan.name] == (plan.requests_per_s, plan.request_burst)
        limits = PLAN_LIMITS[plan.name]
        assert limits.max_vertices == (plan.max_vertices or MAX_VERTICES)
        assert (limits.max_lattices, limits.running, limits.waiting) == (
            plan.max_lattices,
            plan.running,
            plan.waiting,
        )


def test_plans_grow_in_order() -> None:
    """Each plan allows at least what the one before it does (None: unlimited)."""
    big = float("inf")
    for smaller, larger in itertools.pairwise(CATALOGUE):
        assert larger.requests_per_s >= smaller.requests_per_s
        assert larger.request_burst >= smaller.request_burst
        for field in ("max_vertices", "max_lattices", "running", "waiting"):
            before, after = getattr(smaller, field), getattr(larger, field)
            assert (big if after is None else after) >= (big if before is None else before), field
