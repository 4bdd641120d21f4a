"""The cost of row-level security on the services' hot queries: `python -m loadtest rls`.

On a seeded server (loadtest/dbseed.py: 1,000 tenants, 100,000 lattices, 1,000,000 deliveries)
the hot-path steps of loadtest/hotpaths.py (the services' own store methods) run `--rounds`
times as each of three roles, in turn, the order rotating every round:

- `catalytic_app`, the services' role: every policy applies (RLS is FORCED on every table);
- `catalytic_norls`, made for the run: a member of catalytic_app (the same grants) with
  BYPASSRLS, so the same statements run with the same privileges and no policy at all;
- `catalytic_control`, made for the run like catalytic_norls but without BYPASSRLS: the same
  work as catalytic_app under another name, an A/A control. Its ratio to catalytic_app is what
  the method reads where there is no difference: the noise floor of the run.

pg_stat_statements keeps the roles' figures apart, so each statement is compared on the server,
where row-level security does its work (no network or client time to dilute it). The figure
per statement is its fastest call (minimum execution plus minimum planning time): on a shared
machine the minimum is the figure least disturbed by other work, and RLS costs the same CPU in
every call. Statements are weighted by their calls. A statement whose rows per call differ by
more than 10% between the roles (the policies alone keep it to one tenant, or the data moved
between rounds) is listed and left out. The client's wall time per step is shown too.

Target: the app role at most 10% slower than without RLS. `--policies initplans`
measures a variant of the policies (loadtest/sql/rls_initplans.sql, ADR 60) on the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from loadtest import pgstats
from loadtest.dbseed import SeededServer, seeded_server
from loadtest.hotpaths import Workload, workload
from services.common.keys.files import FileKekRing
from services.webhook.secret_box import SecretBox

APP = pgstats.APP_ROLE
NO_RLS = "catalytic_norls"
CONTROL = "catalytic_control"
ROLES = (APP, NO_RLS, CONTROL)
TARGET = 1.10
INITPLANS_SQL = Path(__file__).resolve().parent / "sql" / "rls_initplans.sql"
ROWS_TOLERANCE = 0.10
_CREATE_ROLE = """
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN
    CREATE ROLE {role} LOGIN {bypass} INHERIT IN ROLE catalytic_app;
  END IF;
END$$
"""


def create_roles(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role, bypass in ((NO_RLS, "BYPASSRLS"), (CONTROL, "NOBYPASSRLS")):
            conn.execute(
                sql.SQL(_CREATE_ROLE).format(
                    name=sql.Literal(role), role=sql.Identifier(role), bypass=sql.SQL(bypass)
                )
            )


def best_ms(s: pgstats.Statement) -> float:
    """A statement's fastest call: minimum execution time, plus minimum planning time for the
    share of its calls that were planned (a prepared statement's later calls are not)."""
    return s.min_ms + plan_ms(s)


def plan_ms(s: pgstats.Statement) -> float:
    return s.min_plan_ms * s.plans / s.calls if s.calls else 0.0


@dataclass(frozen=True)
class Compared:
    """One statement's figures as the app role and as another role."""

    app: pgstats.Statement
    other: pgstats.Statement

    @property
    def same_rows(self) -> bool:
        a = self.app.rows / self.app.calls
        b = self.other.rows / self.other.calls
        return abs(a - b) <= ROWS_TOLERANCE * max(a, b, 1.0)

    @property
    def ratio(self) -> float:
        other = best_ms(self.other)
        return best_ms(self.app) / other if other else 1.0


def compare(statements: Sequence[pgstats.Statement], other: str, min_calls: int) -> list[Compared]:
    """The statements both roles ran at least `min_calls` times, most app-role time first."""
    by_role: dict[str, dict[str, pgstats.Statement]] = defaultdict(dict)
    for s in statements:
        by_role[s.role][s.query] = s
    mine, theirs = by_role[APP], by_role[other]
    found = [
        Compared(mine[query], theirs[query])
        for query in mine.keys() & theirs.keys()
        if min(mine[query].calls, theirs[query].calls) >= min_calls
    ]
    return sorted(found, key=lambda c: -best_ms(c.app) * c.app.calls)


def weighted_ratio(
    compared: Sequence[Compared], figure: Callable[[pgstats.Statement], float] = best_ms
) -> float:
    """Sum over statements of calls x `figure` (the fastest call), app role over the other
    role (the calls are the app role's, so both sides weigh each statement alike)."""
    app = sum(figure(c.app) * c.app.calls for c in compared)
    other = sum(figure(c.other) * c.app.calls for c in compared)
    return app / other if other else 1.0


def geometric_mean_ratio(compared: Sequence[Compared]) -> float:
    """Each statement's ratio weighing the same, whatever its time or calls."""
    ratios = [c.ratio for c in compared if c.ratio > 0]
    return statistics.geometric_mean(ratios) if ratios else 1.0


async def _ignore(step: str) -> None:
    del step


class _StepClock:
    """Records the time since the previous lap under each step's name."""

    def __init__(self, into: dict[str, list[float]]) -> None:
        self._into = into
        self._last = time.perf_counter()

    async def lap(self, step: str) -> None:
        now = time.perf_counter()
        self._into[step].append(now - self._last)
        self._last = now


async def run_rounds(
    server: SeededServer, box: SecretBox, rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Wall time per step (seconds) by role, over `rounds` rounds; pg_stat_statements is reset
    after one untimed round per role (connections, caches, first plans)."""
    times: dict[str, dict[str, list[float]]] = {role: defaultdict(list) for role in ROLES}
    urls = {role: server.app_url.replace(f"{APP}@", f"{role}@", 1) for role in ROLES}
    async with (
        workload(urls[APP], box, name=APP, repeated=True) as app,
        workload(urls[NO_RLS], box, name=NO_RLS, repeated=True) as no_rls,
        workload(urls[CONTROL], box, name=CONTROL, repeated=True) as control,
    ):
        loads: list[tuple[str, Workload]] = [(APP, app), (NO_RLS, no_rls), (CONTROL, control)]
        for _, hot in loads:
            await hot.run(_ignore)
        pgstats.reset(server.admin_url)
        for number in range(rounds):
            shift = number % len(loads)
            for role, hot in loads[shift:] + loads[:shift]:
                await hot.run(_StepClock(times[role]).lap)
    return times


def _print_statements(compared: Sequence[Compared], show: int) -> None:
    print(f"{'calls':>6} {'RLS ms':>8} {'no RLS':>8} {'ratio':>6}  statement")
    for c in compared[:show]:
        print(
            f"{c.app.calls:>6} {best_ms(c.app):>8.4f} {best_ms(c.other):>8.4f} "
            f"{c.ratio:>6.2f}  {c.app.short_query(100)}"
        )
    if len(compared) > show:
        print(f"... and {len(compared) - show} more")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest rls", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="runs of every step per role")
    parser.add_argument("--show", type=int, default=25, help="statements listed")
    parser.add_argument(
        "--policies",
        choices=("as-is", "initplans"),
        default="as-is",
        help="initplans: measure the variant of sql/rls_initplans.sql (scratch database only)",
    )
    args = parser.parse_args(argv)
    if not 2 <= args.rounds <= 200:
        parser.error("bounded: 2..200 rounds")

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rls-kek-") as kek_dir:
        ring = FileKekRing(Path(kek_dir))
        ring.create()
        box = SecretBox(ring)
        with seeded_server() as server:
            seeded = ", ".join(f"{k} {v:.1f} s" for k, v in server.seconds.items())
            print(f"seeded server: {seeded}", flush=True)
            create_roles(server.admin_url)
            if args.policies == "initplans":
                with psycopg.connect(server.admin_url, autocommit=True) as conn:
                    conn.execute(INITPLANS_SQL.read_text())  # type: ignore[arg-type]  # ours
            pgstats.enable(server.admin_url)
            started = time.perf_counter()
            times = asyncio.run(run_rounds(server, box, args.rounds))
            elapsed = time.perf_counter() - started
            statements = pgstats.read(server.admin_url, roles=ROLES)
    rls = compare(statements, NO_RLS, args.rounds)
    control = compare(statements, CONTROL, args.rounds)
    same = [c for c in rls if c.same_rows]
    kept = {c.app.query for c in same}
    control_same = [c for c in control if c.same_rows and c.app.query in kept]
    loads = " ".join(f"{x:.2f}" for x in load_before)
    after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\npolicies {args.policies}; {args.rounds} rounds per role in {elapsed:.1f} s; load"
        f" average {loads} -> {after}"
    )
    print("\nServer time of the fastest call (pg_stat_statements: min execution + min planning):")
    _print_statements(same, args.show)
    differ = [c for c in rls if not c.same_rows]
    if differ:
        print("\nRows per call differ by more than 10% with and without RLS, left out:")
        for c in differ:
            print(
                f"  {c.app.rows / c.app.calls:g} with RLS, {c.other.rows / c.other.calls:g}"
                f" without: {c.app.short_query(90)}"
            )
    print("\nClient wall time per step (median of the rounds, ms):")
    print(f"{'RLS ms':>8} {'no RLS':>8} {'control':>8} {'ratio':>6}  step")
    totals = dict.fromkeys(ROLES, 0.0)
    for step in times[APP]:
        medians = {role: statistics.median(times[role][step]) * 1000 for role in ROLES}
        for role in ROLES:
            totals[role] += medians[role]
        print(
            f"{medians[APP]:>8.2f} {medians[NO_RLS]:>8.2f} {medians[CONTROL]:>8.2f} "
            f"{medians[APP] / medians[NO_RLS]:>6.2f}  {step}"
        )
    print(
        f"{totals[APP]:>8.2f} {totals[NO_RLS]:>8.2f} {totals[CONTROL]:>8.2f} "
        f"{totals[APP] / totals[NO_RLS]:>6.2f}  all steps"
    )
    ratio = weighted_ratio(same)
    floor = weighted_ratio(control_same)
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(
        f"\nserver time, {len(same)} statements, weighted by calls: execution"
        f" {weighted_ratio(same, lambda s: s.min_ms):.3f}, planning"
        f" {weighted_ratio(same, plan_ms):.3f}; each statement alike (geometric mean):"
        f" {geometric_mean_ratio(same):.3f} (control {geometric_mean_ratio(control_same):.3f})"
    )
    print(
        f"server time, {len(same)} statements: RLS / no RLS = {ratio:.3f}; control (RLS /"
        f" RLS under another name) = {floor:.3f}; target <= {TARGET:.2f}: {verdict}"
    )
    return 0 if ratio <= TARGET else 1
