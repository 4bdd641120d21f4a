"""Per-plan limits: lattice size and count (checked before any field is allocated) and each
tenant's share of the compute pool (applied by the pool's fair queue)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from services.common.errors import ResourceExhausted
from services.common.plans import CATALOGUE, FALLBACK_PLAN
from services.lattice.engine.fair_queue import Share
from services.lattice.engine.shapes import MAX_VERTICES


@dataclass(frozen=True)
class PlanLimits:
    """What one plan allows; `max_lattices` None means unlimited. `running` computations at
    once (None: as many as the pool gives one tenant, all its workers but one) and `waiting`
    ones (None: the tenant's fair share of the queue alone bounds them); ADR 42."""

    max_vertices: int
    max_lattices: int | None
    running: int | None
    waiting: int | None


# From the plan catalogue (services/common/plans.py); no vertex limit there means the largest
# lattice the service accepts at all.
PLAN_LIMITS: dict[str, PlanLimits] = {
    plan.name: PlanLimits(
        max_vertices=plan.max_vertices or MAX_VERTICES,
        max_lattices=plan.max_lattices,
        running=plan.running,
        waiting=plan.waiting,
    )
    for plan in CATALOGUE
}

logger = logging.getLogger(__name__)


class PlanLookup(Protocol):
    """Where a tenant's plan is read (services.common.ratelimit.TenantPlans: cached)."""

    async def plan_of(self, tenant_id: str) -> str | None: ...


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


def compute_share(tenant_id: str, plan: str | None) -> Share:
    """The tenant's share of the compute pool under `plan` (unknown or None: the smallest)."""
    limits = limits_for(plan or FALLBACK_PLAN)
    return Share(tenant_id, max_running=limits.running, max_waiting=limits.waiting)


async def share_of(plans: PlanLookup | None, tenant_id: str) -> Share:
    """The tenant's compute share, its plan read from `plans`; when the plan cannot be read,
    the smallest plan's share (work is still accepted, never more than any plan allows)."""
    plan = None
    if plans is not None:
        try:
            plan = await plans.plan_of(tenant_id)
        except Exception:
            logger.warning("could not read the plan of tenant %s", tenant_id, exc_info=True)
    return compute_share(tenant_id, plan)
