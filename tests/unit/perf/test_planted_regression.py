"""The gate fails on a planted regression, naming the benchmark, its baseline and the new figure.

The benchmark is the gate's own engine benchmark (perf/engine.py) on a small lattice, with
networkx as the peer (the `bench` extra, scipy included, is not installed for `make test`).
PERF_PLANT_REGRESSION makes the engine's side do its work several times per counted query: a
slowdown in the measured code, not an edit of the figure.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from typing import Any

import networkx
import pytest

from bench.lattice import Lattice, undirected_edges
from devstack.stack import REPO_ROOT
from perf.engine import EngineVsPeer, Side
from perf.run import (
    PLANT_VARIABLE,
    BenchmarkContext,
    Progress,
    Session,
    check,
    machine,
    parse_plant,
)
from services.lattice.engine.paths import Algorithm, find_path

NAME = "engine-bfs-unit"


def _ours(_: Any, lattice: Lattice, s: int, t: int) -> float:
    path = find_path(
        lattice.grid,
        lattice.field,
        lattice.coordinates(s),
        lattice.coordinates(t),
        algorithm=Algorithm.BFS,
    )
    return float(path.hops)


def _build(lattice: Lattice) -> networkx.Graph:
    u, v = undirected_edges(lattice)
    graph = networkx.Graph()
    graph.add_edges_from(zip(u.tolist(), v.tolist(), strict=True))
    return graph


def _networkx(graph: networkx.Graph, _: Lattice, s: int, t: int) -> float:
    return float(len(networkx.bidirectional_shortest_path(graph, s, t)) - 1)


def small() -> EngineVsPeer:
    return EngineVsPeer(
        NAME,
        "ours BFS",
        "networkx bidirectional_shortest_path",
        size=16,
        repeats=7,
        sides=lambda: (Side("ours BFS", _ours), Side("networkx", _networkx, _build)),
    )


@pytest.fixture(scope="module")
def clean_figure() -> float:
    """The small benchmark's figure without a plant: the baseline of these tests."""
    quiet = Progress(io.StringIO())
    return small().measure(BenchmarkContext(Session(quiet), 1, quiet)).figure


def baselines_file(tmp_path, value: float, tolerance: float):
    """A baselines.json holding the small benchmark's baseline for this machine's CPU model."""
    path = tmp_path / "baselines.json"
    entry = {"value": value, "tolerance": tolerance}
    path.write_text(json.dumps({NAME: {machine()["cpu"]: entry}}))
    return path


def test_a_planted_regression_fails_the_gate_naming_benchmark_baseline_and_figure(
    clean_figure: float, tmp_path
) -> None:
    history = tmp_path / "history.jsonl"
    out = io.StringIO()
    status = check(
        [small()],
        baselines_file(tmp_path, clean_figure, 0.4),
        history=history,
        plant=parse_plant(f"{NAME}:4", [NAME]),
        out=out,
        progress=Progress(io.StringIO()),
    )
    text = out.getvalue()
    assert status == 1, text
    failure = next(line for line in text.splitlines() if line.startswith("perf-check: FAILED"))
    assert f"REGRESSION {NAME}: new figure " in failure
    assert f"baseline {clean_figure:.4g}, tolerance 40%" in failure
    assert "worse" in failure
    new_figure = float(failure.split("new figure ")[1].split(",")[0])
    assert new_figure > clean_figure * 1.4
    assert not history.exists(), "a planted run must not enter the history"


def test_the_same_benchmark_without_the_plant_passes_and_is_recorded(
    clean_figure: float, tmp_path
) -> None:
    history = tmp_path / "history.jsonl"
    out = io.StringIO()
    # A wide tolerance: this asserts the plumbing, not the machine's steadiness.
    status = check(
        [small()],
        baselines_file(tmp_path, clean_figure, 0.9),
        history=history,
        plant={},
        out=out,
        progress=Progress(io.StringIO()),
    )
    assert status == 0, out.getvalue()
    (entry,) = [json.loads(line) for line in history.read_text().splitlines()]
    assert entry["passed"] is True
    assert set(entry["ratios"]) == {NAME}
    assert len(entry["ratios"][NAME]["samples"]) == 7
    assert {"date", "machine", "load_average", "elapsed_s"} <= set(entry)


def test_the_plant_names_a_known_benchmark_and_a_factor() -> None:
    assert parse_plant("", [NAME]) == {}
    assert parse_plant(NAME, [NAME]) == {NAME: 2}
    assert parse_plant(f" {NAME}:3 ", [NAME]) == {NAME: 3}
    with pytest.raises(ValueError, match="unknown benchmark 'engine-bsf-unit'"):
        parse_plant("engine-bsf-unit", [NAME])
    with pytest.raises(ValueError, match="at least 1"):
        parse_plant(f"{NAME}:0", [NAME])


def test_make_perf_check_refuses_a_misspelt_plant_before_measuring() -> None:
    env = {**os.environ, PLANT_VARIABLE: "rest-get-vs-cieling"}
    result = subprocess.run(
        [sys.executable, "-m", "perf", "check"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown benchmark 'rest-get-vs-cieling'" in result.stderr
