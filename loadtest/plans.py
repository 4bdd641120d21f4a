"""The plans PostgreSQL chose for the services' hot queries, and the sequential scans in them.

`collect()` turns auto_explain on for the services' role (every statement's plan, as JSON, in
the server's JSON log), runs loadtest/hotpaths.py's steps through the services' own stores on
a seeded server (loadtest/dbseed.py), and reads the plans back, each attributed to the step
that ran it (a marker is logged after each step). `seq_scans()` finds the `Seq Scan` nodes on
tables of at least `BIG_TABLE_ROWS` rows.

Why auto_explain rather than `EXPLAIN` of a list of statements: the plans are those of the
statements the services actually send, with their parameters and under their tenant context
(row-level security on), including statements that run inside them (foreign-key checks and
cascades, triggers); no statement is copied out of the stores, so none can drift (ADR 60).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from devstack.postgres import APP_ROLE
from loadtest.dbseed import SeededServer
from loadtest.hotpaths import workload
from services.webhook.secret_box import SecretBox

MARKER = "hot-path step done: "
# A sequential scan on a table this big is a finding; below it, scanning may well be cheapest.
BIG_TABLE_ROWS = 1000
LOG_WAIT_S = 10.0
# Sequential scans that are the right plan: (step, table) -> why. Each is a decision, reviewed.
EXPECTED_SEQ_SCANS = {
    ("auth: denylist rebuild", "revoked_access_tokens"): (
        "the rebuild (only after Redis lost its data) reads every unexpired revocation, and the"
        " purge on each logout keeps the table to about those rows: all of it is the answer"
    ),
}


@dataclass(frozen=True)
class Plan:
    """One executed statement's plan (auto_explain's JSON: "Query Text" and "Plan")."""

    step: str
    query: str
    root: Mapping[str, Any]


@dataclass(frozen=True)
class SeqScan:
    """A Seq Scan node on a big table, with the statement and step it came from."""

    step: str
    table: str
    rows: int
    plan: Plan

    def describe(self) -> str:
        query = " ".join(self.plan.query.split())
        return (
            f"step {self.step!r}: Seq Scan on {self.table} ({self.rows:,} rows)\n"
            f"  statement: {query}\n  plan:\n" + "\n".join(render(self.plan.root, indent=4))
        )


@dataclass
class Report:
    """Every plan by step, the store methods the steps covered, and the tables' sizes."""

    plans: list[Plan] = field(default_factory=list)
    covered: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def seq_scans(
        self, min_rows: int = BIG_TABLE_ROWS, *, expected: Iterable[tuple[str, str]] = ()
    ) -> list[SeqScan]:
        """Seq Scan nodes on tables of at least `min_rows` rows, but for the `expected`
        (step, table) pairs (EXPECTED_SEQ_SCANS)."""
        big = {table: n for table, n in self.rows.items() if n >= min_rows}
        allowed = set(expected)
        return [
            SeqScan(plan.step, node["Relation Name"], big[node["Relation Name"]], plan)
            for plan in self.plans
            for node in nodes(plan.root)
            if node.get("Node Type") == "Seq Scan"
            and node.get("Relation Name") in big
            and (plan.step, node["Relation Name"]) not in allowed
        ]

    def steps(self) -> set[str]:
        return {plan.step for plan in self.plans}


def nodes(root: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every node of a plan tree, depth first (sub-plans and init-plans are in "Plans")."""
    yield root
    for child in root.get("Plans", ()):
        yield from nodes(child)


def render(node: Mapping[str, Any], indent: int = 0) -> list[str]:
    """A plan as EXPLAIN's text form roughly shows it: node, relation, index, conditions."""
    parts = [str(node.get("Node Type"))]
    if "Relation Name" in node:
        parts.append(f"on {node['Relation Name']}")
    if "Index Name" in node:
        parts.append(f"using {node['Index Name']}")
    line = " " * indent + " ".join(parts) + f" (rows={node.get('Plan Rows')})"
    lines = [line]
    for key in ("Index Cond", "Recheck Cond", "Filter", "Join Filter", "Hash Cond"):
        if key in node:
            lines.append(" " * (indent + 6) + f"{key}: {node[key]}")
    for child in node.get("Plans", ()):
        lines += render(child, indent + 2)
    return lines


def _plans_from_log(path: Path, offset: int) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """('plan', the JSON) or ('marker', the step) for each relevant record after `offset`."""
    with path.open("rb") as log:
        log.seek(offset)
        for line in log:
            record = json.loads(line)
            message = record.get("message", "")
            if message.startswith(MARKER):
                yield "marker", message.removeprefix(MARKER)
            elif record.get("user") == APP_ROLE and "plan:\n" in message:
                yield "plan", json.loads(message.split("plan:\n", 1)[1])


def _wait_for_marker(path: Path, offset: int, step: str) -> None:
    deadline = time.monotonic() + LOG_WAIT_S
    while time.monotonic() < deadline:
        if path.exists() and any(
            kind == "marker" and value == step for kind, value in _plans_from_log(path, offset)
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"the marker of step {step!r} did not reach {path} in {LOG_WAIT_S:g} s")


async def collect(
    server: SeededServer, box: SecretBox, *, only: Iterable[str] | None = None
) -> Report:
    """Runs the hot-path steps (all, or those named in `only`) with auto_explain on for the
    services' role and returns their plans."""
    path = server.json_log
    offset = path.stat().st_size if path.exists() else 0
    role = sql.Identifier(APP_ROLE)
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} SET auto_explain.log_min_duration = 0").format(role))
    report = Report(rows=server.row_counts())
    last = ""
    try:
        async with await psycopg.AsyncConnection.connect(
            server.admin_url, autocommit=True
        ) as marker:

            async def step_done(name: str) -> None:
                nonlocal last
                last = name
                text = sql.Literal(MARKER + name)
                await marker.execute(sql.SQL("DO $$BEGIN RAISE LOG {}; END$$").format(text))

            async with workload(server.app_url, box) as hot:
                report.covered = await hot.run(step_done, only=only)
    finally:
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} RESET auto_explain.log_min_duration").format(role))
    _wait_for_marker(path, offset, last)
    pending: list[dict[str, Any]] = []
    for kind, value in _plans_from_log(path, offset):
        if kind == "plan" and isinstance(value, dict):
            pending.append(value)
        elif kind == "marker" and isinstance(value, str):
            report.plans += [Plan(value, p.get("Query Text", ""), p["Plan"]) for p in pending]
            pending = []
    return report
