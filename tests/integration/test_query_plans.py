"""Every hot query of the services, planned on a database of realistic size, scans no big table
sequentially.

A PostgreSQL of its own (not the session stack's) gets the migrations and 1,000 tenants, 100,000
lattices and 1,000,000 webhook deliveries (loadtest/dbseed.py, about half a minute on 2 cores),
then the services' own store methods run once each as the services' role, with their tenant
context, while auto_explain records the plans (loadtest/plans.py, ADR 60).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import psycopg
import pytest

from loadtest import hotpaths, plans
from loadtest.dbseed import Scale, SeededServer, seeded_server
from tests.unit.webhook.harness import shared_box

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server() -> Iterator[SeededServer]:
    with seeded_server() as seeded:
        timings = ", ".join(f"{step} {s:.1f} s" for step, s in seeded.seconds.items())
        print(f"[query plans] seeded server ready: {timings}", file=sys.stderr)
        yield seeded


@pytest.fixture(scope="module")
def report(server: SeededServer) -> plans.Report:
    return asyncio.run(plans.collect(server, shared_box()))


def test_the_database_is_of_realistic_size(server: SeededServer) -> None:
    rows = server.row_counts()
    floor = Scale()
    # reltuples is ANALYZE's estimate; a few per cent either way.
    assert rows["tenants"] >= 0.95 * floor.tenants
    assert rows["lattices"] >= 0.95 * 100_000
    assert rows["webhook_deliveries"] >= 0.95 * 1_000_000


def test_every_store_method_is_planned(report: plans.Report) -> None:
    assert hotpaths.unlisted_stores() == set(), "add these classes to hotpaths.STORES"
    assert hotpaths.uncovered(report.covered) == set(), "add a step to loadtest/hotpaths.py"
    assert report.steps() == {step.name for step in hotpaths.STEPS}, "a step's plans are missing"


def test_no_hot_query_scans_a_big_table_sequentially(report: plans.Report) -> None:
    found = report.seq_scans(expected=plans.EXPECTED_SEQ_SCANS)
    assert not found, "sequential scans on big tables:\n\n" + "\n\n".join(
        scan.describe() for scan in found
    )


def test_the_check_sees_a_sequential_scan_when_an_index_is_missing(server: SeededServer) -> None:
    """The check itself: without the e-mail index, log-in scans `users` and is reported."""
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_get_indexdef('users_email_key'::regclass)").fetchone()
        assert row is not None
        definition = row[0]
        conn.execute("DROP INDEX users_email_key")
    try:
        found = asyncio.run(plans.collect(server, shared_box(), only=["auth: log in"]))
    finally:
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(definition)
    scans = found.seq_scans()
    assert [(scan.step, scan.table) for scan in scans] == [("auth: log in", "users")]
    assert "Seq Scan on users" in scans[0].describe()


def test_the_expected_sequential_scans_still_happen(report: plans.Report) -> None:
    """An expected scan that no longer happens is an exception to remove."""
    happened = {(scan.step, scan.table) for scan in report.seq_scans()}
    assert set(plans.EXPECTED_SEQ_SCANS) <= happened
