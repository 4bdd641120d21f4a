"""Query times from pg_stat_statements around a load scenario: reset before, read after.

PostgreSQL must load the extension at start (`shared_preload_libraries`): a load test's own
stack gets it with `Stack(..., postgres_settings=pgstats.SETTINGS)`, then

    pgstats.enable(stack.database_admin_url)   # CREATE EXTENSION, once per database
    pgstats.reset(stack.database_admin_url)    # just before the measured part
    ... drive the load ...
    rows = pgstats.read(stack.database_admin_url)
    print("\\n".join(pgstats.format_table(rows)))
    worst = pgstats.worst(rows)                # the statement with the highest p95 bound
    overall = pgstats.overall_p95_bound_ms(rows)  # >= the p95 of all their calls together

pg_stat_statements keeps count, mean, standard deviation, minimum and maximum per statement,
not a histogram, so a p95 is derived, two ways (ADR 60):

- `p95_bound_ms`: an upper bound that holds for any distribution. Cantelli's inequality,
  P(X >= mean + k*sd) <= 1 / (1 + k^2), is 5% at k = sqrt(19) = 4.36, so at most 5% of the
  calls took longer than mean + 4.36 sd (and none longer than max). A target met by the bound
  is met by the true p95.
- `p95_normal_ms`: mean + 1.645 sd, what the p95 would be if times were normally distributed;
  query times are skewed to the right, so this is an estimate, not a bound.

Times are the server's execution time (`*_exec_time`): no network, no client, no pool wait.
Planning time is read too when `pg_stat_statements.track_planning` is on (SETTINGS turns it
on); it is reported apart, as PostgreSQL reports it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg

# For a load stack's PostgreSQL command line (devstack.Stack(postgres_settings=...)).
SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    # Statements inside functions (the RLS helpers are SQL functions, inlined) are not counted
    # apart: what a service sends is what is timed.
    "pg_stat_statements.track": "top",
    "pg_stat_statements.track_planning": "on",
    "pg_stat_statements.max": "5000",
}
APP_ROLE = "catalytic_app"
# k of Cantelli's inequality for a one-sided 5% tail: 1 / (1 + k^2) = 0.05.
CANTELLI_K95 = math.sqrt(19.0)
NORMAL_Z95 = 1.6449

_READ = """
SELECT r.rolname AS role, s.query, s.calls, s.rows,
       s.total_exec_time, s.mean_exec_time, s.stddev_exec_time, s.min_exec_time,
       s.max_exec_time, s.mean_plan_time, s.min_plan_time, s.plans
FROM pg_stat_statements s
JOIN pg_roles r ON r.oid = s.userid
JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database() AND s.calls >= %s AND s.toplevel
ORDER BY s.total_exec_time DESC
"""


@dataclass(frozen=True)
class Statement:
    """One normalized statement's figures, in milliseconds."""

    role: str
    query: str
    calls: int
    rows: int
    total_ms: float
    mean_ms: float
    stddev_ms: float
    min_ms: float
    max_ms: float
    mean_plan_ms: float
    min_plan_ms: float = 0.0
    # How many of the calls were planned (the others ran a prepared statement's cached plan).
    plans: int = 0

    @property
    def p95_bound_ms(self) -> float:
        """At least 95% of calls took at most this long, whatever the distribution."""
        return min(self.max_ms, self.mean_ms + CANTELLI_K95 * self.stddev_ms)

    @property
    def p95_normal_ms(self) -> float:
        """The p95 were the times normally distributed (an estimate)."""
        return min(self.max_ms, self.mean_ms + NORMAL_Z95 * self.stddev_ms)

    def short_query(self, width: int = 90) -> str:
        text = " ".join(self.query.split())
        return text if len(text) <= width else text[: width - 1] + "…"


def enable(admin_url: str) -> None:
    """Creates the extension in the URL's database (needs it in shared_preload_libraries)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def reset(admin_url: str) -> None:
    """Forgets every statement's figures (all databases, all roles)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def read(
    admin_url: str, *, roles: Iterable[str] = (APP_ROLE,), min_calls: int = 1
) -> list[Statement]:
    """The statements run in the URL's database by `roles` (the services' role by default;
    empty: every role) with at least `min_calls` calls, the most total time first."""
    wanted = set(roles)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(_READ, (min_calls,)).fetchall()
    return [
        Statement(
            role=row[0],
            query=row[1],
            calls=int(row[2]),
            rows=int(row[3]),
            total_ms=float(row[4]),
            mean_ms=float(row[5]),
            stddev_ms=float(row[6]),
            min_ms=float(row[7]),
            max_ms=float(row[8]),
            mean_plan_ms=float(row[9] or 0.0),
            min_plan_ms=float(row[10] or 0.0),
            plans=int(row[11] or 0),
        )
        for row in rows
        if not wanted or row[0] in wanted
    ]


def worst(statements: Sequence[Statement], *, min_calls: int = 20) -> Statement | None:
    """The statement with the highest p95 bound among those called at least `min_calls` times
    (a statement run a handful of times says little about a p95)."""
    frequent = [s for s in statements if s.calls >= min_calls]
    return max(frequent, key=lambda s: s.p95_bound_ms, default=None)


def share_above(statements: Sequence[Statement], threshold_ms: float) -> float:
    """An upper bound on the share of all calls (of every statement) slower than
    `threshold_ms`: each statement's share by Cantelli's inequality, 0 past its maximum."""
    calls = sum(s.calls for s in statements)
    if not calls:
        return 0.0
    above = 0.0
    for s in statements:
        if threshold_ms >= s.max_ms:
            continue
        if threshold_ms <= s.mean_ms or s.stddev_ms == 0:
            above += s.calls
            continue
        k = (threshold_ms - s.mean_ms) / s.stddev_ms
        above += s.calls / (1 + k * k)
    return above / calls


def overall_p95_bound_ms(statements: Sequence[Statement]) -> float:
    """A time that at least 95% of all the calls together took at most (share_above <= 5%),
    found by bisection to within 1 microsecond."""
    if not statements:
        return 0.0
    low, high = 0.0, max(s.max_ms for s in statements)
    while high - low > 0.001:
        middle = (low + high) / 2
        if share_above(statements, middle) <= 0.05:
            high = middle
        else:
            low = middle
    return high


def format_table(statements: Sequence[Statement], *, limit: int = 15) -> list[str]:
    """A fixed-width table of the `limit` statements with the most total time."""
    lines = [
        f"{'calls':>7} {'mean ms':>8} {'sd ms':>7} {'max ms':>8} {'p95≤ ms':>8} "
        f"{'p95~ ms':>8} {'plan ms':>8}  statement"
    ]
    for s in statements[:limit]:
        lines.append(
            f"{s.calls:>7} {s.mean_ms:>8.3f} {s.stddev_ms:>7.3f} {s.max_ms:>8.2f} "
            f"{s.p95_bound_ms:>8.3f} {s.p95_normal_ms:>8.3f} {s.mean_plan_ms:>8.3f}  "
            f"{s.short_query()}"
        )
    if len(statements) > limit:
        lines.append(f"... and {len(statements) - limit} more statements")
    return lines
