"""The plan catalogue: every plan's name and what it allows, in one place.

The auth service validates plan names against it (DEFAULT_PLAN, `admin set-plan`), the rate
limiter takes each plan's default request rates from it (TENANT_RATE_LIMIT_<PLAN>_PER_S and
_BURST override them), and the lattice service its lattice limits and compute share
(services/lattice/plans.py). The database's CHECK on `tenants.plan` repeats the names; a test
holds them equal. An unknown or unreadable plan is treated as FALLBACK_PLAN: never more than
any plan allows.

>>> BY_NAME["starter"].max_lattices
50
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Plan:
    """One plan. `requests_per_s` and `request_burst`: per tenant and service. `max_vertices`
    None: as large as any lattice may be; `max_lattices` None: unlimited; `running` and
    `waiting` computations at once, None: bounded only by the pool's fair share (ADR 42)."""

    name: str
    requests_per_s: int
    request_burst: int
    max_vertices: int | None
    max_lattices: int | None
    running: int | None
    waiting: int | None


CATALOGUE: Final[tuple[Plan, ...]] = (
    Plan("free", 10, 20, max_vertices=10_000, max_lattices=5, running=1, waiting=2),
    Plan("starter", 50, 100, max_vertices=100_000, max_lattices=50, running=1, waiting=4),
    Plan("professional", 200, 400, 1_000_000, max_lattices=500, running=2, waiting=8),
    Plan("enterprise", 1000, 2000, None, max_lattices=None, running=None, waiting=None),
)
PLANS: Final = tuple(plan.name for plan in CATALOGUE)
BY_NAME: Final = {plan.name: plan for plan in CATALOGUE}
FALLBACK_PLAN: Final = "free"
