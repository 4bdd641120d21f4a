"""The gate's judgement: direction, tolerance edges, the message, and the tolerance rule."""

from __future__ import annotations

import json
import re

import pytest

from bench.report import _cpu_model, cpu_identity
from perf.model import Baseline, Direction, Measurement, Verdict, judge, paired_ratios
from perf.run import baseline_keys
from perf.store import (
    TooNoisy,
    baselines_for,
    load_recorded,
    record,
    save_baselines,
    tolerance_for,
)


def verdict(direction: Direction, figure: float, value: float = 0.5, tolerance: float = 0.25):
    return Verdict("bench-x", "a ÷ b", direction, Baseline(value, tolerance), figure)


@pytest.mark.parametrize(
    ("figure", "passed"),
    [(0.5, True), (0.625, True), (0.6251, False), (1.0, False), (0.1, True)],
)
def test_lower_is_better_fails_above_baseline_plus_tolerance(figure: float, passed: bool) -> None:
    assert verdict(Direction.LOWER, figure).passed is passed


@pytest.mark.parametrize(
    ("figure", "passed"),
    [(0.5, True), (0.375, True), (0.3749, False), (0.1, False), (2.0, True)],
)
def test_higher_is_better_fails_below_baseline_minus_tolerance(figure: float, passed: bool) -> None:
    assert verdict(Direction.HIGHER, figure).passed is passed


def test_zero_tolerance_passes_the_baseline_itself_only_or_better() -> None:
    assert verdict(Direction.LOWER, 0.5, tolerance=0.0).passed
    assert not verdict(Direction.LOWER, 0.5000001, tolerance=0.0).passed
    assert verdict(Direction.HIGHER, 0.6, tolerance=0.0).passed


def test_improvement_beyond_the_tolerance_is_flagged_not_failed() -> None:
    lower = verdict(Direction.LOWER, 0.3)
    higher = verdict(Direction.HIGHER, 0.7)
    assert lower.passed
    assert lower.improved
    assert higher.passed
    assert higher.improved
    assert not verdict(Direction.LOWER, 0.4).improved


def test_the_failure_message_names_benchmark_baseline_tolerance_and_new_figure() -> None:
    message = verdict(Direction.LOWER, 0.9).message()
    assert message.startswith("REGRESSION bench-x:")
    assert "new figure 0.9," in message
    assert "baseline 0.5," in message
    assert "tolerance 25%" in message
    assert "fails above 0.625" in message
    assert "80.0% worse" in message
    assert "a ÷ b" in message


def test_a_benchmark_without_baseline_fails_and_says_how_to_record_one() -> None:
    v = Verdict("bench-new", "a ÷ b", Direction.HIGHER, None, 1.5)
    assert not v.passed
    assert "make perf-baseline PERF_ARGS='--only bench-new'" in v.message()


@pytest.mark.parametrize(("value", "tolerance"), [(0.0, 0.1), (1.0, 1.0), (1.0, -0.1)])
def test_a_baseline_is_positive_and_its_tolerance_a_fraction(value, tolerance) -> None:
    with pytest.raises(ValueError, match=r"baseline must be finite|tolerance is a fraction"):
        Baseline(value, tolerance)


def test_a_figure_is_positive_and_has_samples_behind_it() -> None:
    assert Measurement.median_of((3.0, 1.0, 2.0)).figure == 2.0
    assert Measurement(0.5, (0.4, 0.6)).figure == 0.5
    for figure, bad in ((1.0, ()), (1.0, (0.0,)), (float("inf"), (1.0,))):
        with pytest.raises(ValueError, match=r"at least one sample|finite and positive"):
            Measurement(figure, bad)


def test_pairs_alternate_which_side_runs_first() -> None:
    calls: list[str] = []

    def side(name: str, seconds: float):
        def run() -> float:
            calls.append(name)
            return seconds

        return run

    assert paired_ratios(side("a", 2.0), side("b", 4.0), 3) == (0.5, 0.5, 0.5)
    assert calls == ["a", "b", "b", "a", "a", "b"]


@pytest.mark.parametrize(
    ("spread", "tolerance"),
    [(0.0, 0.15), (0.05, 0.15), (0.075, 0.15), (0.076, 0.20), (0.08, 0.20), (0.10, 0.20),
     (0.101, 0.25), (0.20, 0.40)],
)  # fmt: skip
def test_tolerance_is_twice_the_spread_rounded_up_to_five_points_at_least_15(
    spread, tolerance
) -> None:
    assert tolerance_for(spread) == tolerance


def test_a_spread_too_wide_to_catch_a_2x_regression_is_refused() -> None:
    with pytest.raises(TooNoisy):
        tolerance_for(0.21)


def test_record_takes_the_median_and_the_largest_deviation() -> None:
    r = record([1.0, 1.1, 0.9, 1.05, 0.95], "here")
    assert r.baseline == Baseline(1.0, 0.2)
    assert r.spread == pytest.approx(0.1)


def test_saving_replaces_named_entries_of_one_cpu_and_keeps_the_others(tmp_path) -> None:
    path = tmp_path / "baselines.json"
    save_baselines({"a": record([1.0], "x"), "b": record([2.0], "x")}, "EPYC", path)
    save_baselines({"b": record([3.0, 3.3], "y")}, "EPYC", path)
    save_baselines({"b": record([4.0], "z")}, "Xeon", path)
    assert load_recorded(path) == {
        "a": {"EPYC": Baseline(1.0, 0.15)},
        "b": {"EPYC": Baseline(3.15, 0.15), "Xeon": Baseline(4.0, 0.15)},
    }
    assert json.loads(path.read_text())["b"]["EPYC"]["recorded"] == "y"


class Named:
    """The part of a Benchmark that choosing a baseline reads."""

    def __init__(self, name: str, direction: Direction) -> None:
        self.name = name
        self.direction = direction
        self.ratio = "a ÷ b"


def test_a_run_is_judged_against_its_own_cpu_models_baseline(tmp_path) -> None:
    path = tmp_path / "baselines.json"
    save_baselines({"x": record([1.0], "here")}, "EPYC", path)
    save_baselines({"x": record([2.0], "there")}, "Xeon", path)
    chosen = baselines_for(["Xeon"], [Named("x", Direction.LOWER)], path)  # type: ignore[list-item]
    assert chosen["x"].baseline == Baseline(2.0, 0.15)
    assert chosen["x"].recorded_on == "Xeon"


@pytest.mark.parametrize(
    ("direction", "lenient"), [(Direction.LOWER, 2.0), (Direction.HIGHER, 1.0)]
)
def test_an_unknown_cpu_model_borrows_the_most_lenient_baseline_and_says_so(
    tmp_path, direction: Direction, lenient: float
) -> None:
    path = tmp_path / "baselines.json"
    save_baselines({"x": record([1.0], "here")}, "EPYC", path)
    save_baselines({"x": record([2.0], "there")}, "Xeon", path)
    chosen = baselines_for(["Ampere"], [Named("x", direction)], path)  # type: ignore[list-item]
    assert chosen["x"].baseline.value == lenient
    v = judge(Named("x", direction), chosen["x"], Measurement(lenient, (lenient,)), ["Ampere"])  # type: ignore[arg-type]
    assert v.passed
    recorded_on = "Xeon" if lenient == 2.0 else "EPYC"
    assert f"judged against the most lenient one ({recorded_on})" in v.message()
    assert (
        "No baseline recorded"
        not in judge(
            Named("x", direction), chosen["x"], Measurement(lenient, (lenient,)), [recorded_on]
        ).message()
    )  # type: ignore[arg-type]


def test_a_benchmark_recorded_nowhere_has_no_baseline(tmp_path) -> None:
    path = tmp_path / "baselines.json"
    save_baselines({"x": record([1.0], "here")}, "EPYC", path)
    assert baselines_for(["EPYC"], [Named("y", Direction.LOWER)], path) == {}  # type: ignore[list-item]


def test_a_family_and_model_baseline_comes_before_the_model_names(tmp_path) -> None:
    """Two hosts reporting "AMD EPYC" differ by generation (ADR 71): a baseline recorded under
    the family and model is this host's; where it has none, the name's (older entries) is."""
    path = tmp_path / "baselines.json"
    save_baselines({"x": record([1.0], "old"), "y": record([3.0], "old")}, "EPYC", path)
    save_baselines({"x": record([1.5], "new")}, "EPYC (family 25, model 1)", path)
    save_baselines({"x": record([0.5], "elsewhere")}, "Xeon", path)
    keys = baseline_keys({"cpu_id": "EPYC (family 25, model 1)", "cpu": "EPYC"})
    assert keys == ["EPYC (family 25, model 1)", "EPYC"]
    benchmarks = [Named("x", Direction.LOWER), Named("y", Direction.LOWER)]
    chosen = baselines_for(keys, benchmarks, path)  # type: ignore[arg-type]
    assert (chosen["x"].baseline.value, chosen["x"].recorded_on) == (1.5, keys[0])
    assert (chosen["y"].baseline.value, chosen["y"].recorded_on) == (3.0, "EPYC")
    # Neither is borrowed: both are this machine's own keys.
    for name in ("x", "y"):
        figure = chosen[name].baseline.value
        verdict = judge(
            Named(name, Direction.LOWER), chosen[name], Measurement(figure, (figure,)), keys
        )  # type: ignore[arg-type]
        assert "No baseline recorded" not in verdict.message()
    # Another generation of the same name, never recorded: the name's entries.
    other = baselines_for(
        baseline_keys({"cpu_id": "EPYC (family 25, model 17)", "cpu": "EPYC"}), benchmarks, path
    )  # type: ignore[arg-type]
    assert other["x"].recorded_on == "EPYC"


def test_a_machine_without_family_numbers_has_one_key() -> None:
    assert baseline_keys({"cpu_id": "Ampere", "cpu": "Ampere"}) == ["Ampere"]


def test_cpu_identity_is_the_model_name_with_its_family_and_model() -> None:
    name, identity = _cpu_model(), cpu_identity()
    assert identity == name or re.fullmatch(
        re.escape(name) + r" \(family \d+, model \d+\)", identity
    )
