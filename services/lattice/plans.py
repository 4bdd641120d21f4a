"""Per-plan limits on lattice size and lattice count, checked before any field is allocated."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import ResourceExhausted
from services.lattice.shapes import MAX_VERTICES


@dataclass(frozen=True)
class PlanLimits:
    """What one plan allows; `max_lattices` None means unlimited."""

    max_vertices: int
    max_lattices: int | None


PLAN_LIMITS: dict[str, PlanLimits] = {
    "free": PlanLimits(max_vertices=10_000, max_lattices=5),
    "starter": PlanLimits(max_vertices=100_000, max_lattices=50),
    "professional": PlanLimits(max_vertices=1_000_000, max_lattices=500),
    "enterprise": PlanLimits(max_vertices=MAX_VERTICES, max_lattices=None),
}
FALLBACK_PLAN = "free"


def limits_for(plan: str) -> PlanLimits:
    """The plan's limits; an unknown name gets the smallest plan's, never more than paid for."""
    return PLAN_LIMITS.get(plan, PLAN_LIMITS[FALLBACK_PLAN])


def check_vertex_limit(plan: str, vertex_count: int) -> None:
    """ResourceExhausted when one lattice of `vertex_count` vertices is over the plan's limit."""
    limit = limits_for(plan).max_vertices
    if vertex_count > limit:
        raise ResourceExhausted(
            f"a lattice of {vertex_count:,} vertices exceeds the {plan} plan's limit of"
            f" {limit:,} vertices per lattice"
        )


def check_lattice_count(plan: str, existing: int) -> None:
    """ResourceExhausted when a tenant holding `existing` lattices may not create another."""
    limit = limits_for(plan).max_lattices
    if limit is not None and existing >= limit:
        raise ResourceExhausted(
            f"the {plan} plan allows at most {limit:,} lattices per tenant; delete one first"
        )
