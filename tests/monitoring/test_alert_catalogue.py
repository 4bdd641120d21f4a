"""Every alert carries its labels and annotations, has promtool tests and a runbook section."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.tools import RULE_TESTS, RULES

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "monitoring" / "alert-runbooks.md"
RUNBOOK_BASE = "https://github.com/catalytic/platform/blob/main/docs/monitoring/alert-runbooks.md#"
SEVERITIES = {"critical", "warning", "info"}
# Level-2 sections of the runbook document that are not an alert.
GENERAL_SECTIONS = {"Before you start"}


def _alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


ALERT_RULES = _alert_rules()
ALERTS = sorted({rule["alert"] for rule in ALERT_RULES})


def github_anchor(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens;
    a repeated anchor gets -1, -2, ..."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    anchor = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
    count = seen.get(anchor, 0)
    seen[anchor] = count + 1
    return anchor if count == 0 else f"{anchor}-{count}"


def _headings() -> dict[str, tuple[int, str]]:
    """anchor -> (level, heading text) of the runbook document, code blocks left out."""
    found: dict[str, tuple[int, str]] = {}
    seen: dict[str, int] = {}
    in_code = False
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"(#{1,6}) +(.+?) *#*$", line)
        if match:
            found[github_anchor(match.group(2), seen)] = (len(match.group(1)), match.group(2))
    return found


def _rule_test_evals() -> dict[str, list[list[tuple[float, bool]]]]:
    """alertname -> per test group, its (eval time in s, expects alerts) in time order."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    evals: dict[str, list[list[tuple[float, bool]]]] = defaultdict(list)
    for path in sorted(RULE_TESTS.glob("*.test.yml")):
        for group in yaml.safe_load(path.read_text())["tests"]:
            by_alert: dict[str, list[tuple[float, bool]]] = defaultdict(list)
            for case in group.get("alert_rule_test", []):
                seconds = sum(
                    int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", case["eval_time"])
                )
                by_alert[case["alertname"]].append((seconds, bool(case.get("exp_alerts"))))
            for name, cases in by_alert.items():
                evals[name].append(sorted(cases))
    return evals


def test_there_are_alerts() -> None:
    assert len(ALERTS) >= 20


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda rule: rule["alert"])
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key), f"{rule['alert']} has no {key}"


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda rule: rule["alert"])
def test_runbook_url_resolves_to_the_alerts_own_section(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    assert url.startswith(RUNBOOK_BASE), url
    anchor = url.removeprefix(RUNBOOK_BASE)
    headings = _headings()
    assert anchor in headings, f"{url}: no heading with anchor #{anchor} in {RUNBOOKS.name}"
    assert headings[anchor] == (2, rule["alert"]), f"#{anchor} is not {rule['alert']}'s section"


def test_every_runbook_section_is_an_alert() -> None:
    sections = {text for level, text in _headings().values() if level == 2}
    assert sections - GENERAL_SECTIONS == set(ALERTS)


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_fires_stays_quiet_and_recovers_in_a_rule_test(alert: str) -> None:
    groups = _rule_test_evals().get(alert, [])
    assert groups, f"no promtool test of {alert} under {RULE_TESTS}"
    fires = any(expects for cases in groups for _, expects in cases)
    quiet = recovers = False
    for cases in groups:
        firing = [time for time, expects in cases if expects]
        quiet_times = [time for time, expects in cases if not expects]
        quiet |= any(not firing or time < min(firing) for time in quiet_times)
        recovers |= bool(firing) and any(time > max(firing) for time in quiet_times)
    assert fires, f"no test where {alert} fires"
    assert quiet, f"no test where {alert} must not fire"
    assert recovers, f"no test where {alert} resolves after firing"
