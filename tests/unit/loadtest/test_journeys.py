"""loadtest/journeys.py and the capacity rule: path ends, windows, and when a step is held."""

from __future__ import annotations

import array
import math

from loadtest.journeys import Shape, Window, is_open, open_vertex
from loadtest.scenarios import Measured, Step


def test_blocked_is_the_apis_convention() -> None:
    assert is_open(1.5)
    assert not is_open(math.inf)
    assert not is_open(math.nan)
    assert not is_open(-0.0)
    assert not is_open(-1.0)


def test_a_path_end_is_open_and_so_is_everything_within_two_steps_in_its_page() -> None:
    shape = Shape(2, 8, 1)  # 8 x 8; a page of the first three rows
    page = array.array("f", [1.0] * 24)
    page[1] = math.inf
    # 0, 2 and 3 are open, but vertex 1 is within two steps of each of them.
    assert open_vertex(page, 0, shape, reverse=False) == [0, 4]


def test_without_such_a_vertex_the_page_edge_is_taken() -> None:
    page = array.array("f", [math.inf, 1.0] * 4)
    assert open_vertex(page, 0, Shape(2, 4, 1), reverse=False) == [0, 0]


def test_the_far_end_is_searched_from_the_last_vertex_and_keeps_absolute_coordinates() -> None:
    shape = Shape(2, 4, 1)
    page = array.array("f", [1.0] * 8)  # the last two rows, offset 8
    assert open_vertex(page, 8, shape, reverse=True) == [3, 3]


def test_a_window_counts_reads_writes_and_routes() -> None:
    window = Window("w")
    window.add("GET /v1/lattices/{id}", False, 2_000_000, 200, "")
    window.add("POST /v1/lattices", True, 9_000_000, 200, "")
    window.add("POST /v1/lattices", True, 1_000_000, 503, "503 b'unavailable'")
    report = window.close().ghz()
    assert (report["reads"], report["writes"], report["count"]) == (1, 2, 3)
    assert report["routes"]["POST /v1/lattices"]["statusCodeDistribution"] == {"200": 1, "503": 1}
    assert window.overall.error_count == 1
    assert window.overall.first_failure.startswith("POST /v1/lattices: 503")


def step(p95_ms: float, errors_in_window: int = 0, errors_joining: int = 0) -> Step:
    window, joining = Window("step"), Window("join")
    for _ in range(100):
        window.add("GET /v1/users/me", False, int(p95_ms * 1e6), 200, "")
    for _ in range(errors_in_window):
        window.add("GET /v1/users/me", False, 0, None, "ConnectionResetError()")
    for _ in range(errors_joining):
        joining.add("POST /v1/auth/register", True, 0, 429, "429")
    return Step(100, Measured(window.close(), {}, {}), joining.close())


def test_a_step_is_held_below_the_gate_without_errors() -> None:
    assert step(120).held
    assert not step(500).held


def test_a_step_with_an_error_is_never_held_however_fast() -> None:
    assert not step(5, errors_in_window=1).held
    assert not step(5, errors_joining=1).held
