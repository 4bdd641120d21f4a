"""Every inhibition rule of the Alertmanager configuration holds on a real Alertmanager.

amtool cannot evaluate inhibition offline, so each rule gets an Alertmanager of its own (the
rendered production configuration, no receiver reachable: nothing needs to be sent): the test
posts the rule's source alert, a target it must silence and, where the rule has `equal`
labels, a target that differs in one of them and must stay active; then reads
`status.inhibitedBy` from the API. The cases come from the rules themselves, so a new rule is
tested as soon as it is written; one case written out by hand says what the issue asked.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.monitoring.render import AlertmanagerSettings, render_alertmanager
from tests.monitoring.tools import tool

SETTINGS = AlertmanagerSettings(
    secrets_dir=Path("/nonexistent/secrets"),
    email_to="oncall@example.test",
    email_from="alertmanager@example.test",
    smtp_smarthost="127.0.0.1:9",
    webhook_url="http://127.0.0.1:9/alerts",
)
INHIBIT_RULES: list[dict[str, Any]] = yaml.safe_load(render_alertmanager(SETTINGS))["inhibit_rules"]
_MATCHER = re.compile(r'^\s*(\w+)\s*(=~|=)\s*"(.*)"\s*$')
ANSWER_WITHIN_S = 10.0


def _labels(matchers: list[str]) -> dict[str, str]:
    """Labels that satisfy `matchers` (equality, or the first alternative of a regex)."""
    labels = {}
    for matcher in matchers:
        found = _MATCHER.match(matcher)
        assert found, f"a matcher this test cannot satisfy: {matcher}"
        name, operator, value = found.groups()
        labels[name] = value.split("|")[0] if operator == "=~" else value
    return labels


@dataclass(frozen=True)
class Case:
    source: dict[str, str]
    silenced: dict[str, str]
    kept: dict[str, str] | None  # differs in an `equal` label: not silenced


def _case(rule: dict[str, Any]) -> Case:
    equal = {name: f"same-{name}" for name in rule.get("equal", [])}
    source = {**equal, **_labels(rule["source_matchers"])}
    silenced = {**equal, **_labels(rule["target_matchers"])}
    for name in equal:
        # A label the matchers fix is the same on both sides already.
        source.setdefault(name, silenced.get(name, equal[name]))
        silenced.setdefault(name, source[name])
    kept = None
    free = [name for name in equal if name not in _labels(rule["target_matchers"])]
    if free:
        kept = {**silenced, free[0]: "another-value"}
    return Case(source, silenced, kept)


class Alertmanager:
    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = directory / "alertmanager.yml"
        config.write_text(render_alertmanager(SETTINGS))
        self.url = f"http://127.0.0.1:{port}"
        self._log = (directory / "alertmanager.log").open("w")
        self._process = subprocess.Popen(
            [
                tool("prometheus-alertmanager"),
                f"--config.file={config}",
                f"--storage.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=5)
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while not self._ready():
            assert self._process.poll() is None, (directory / "alertmanager.log").read_text()
            assert time.monotonic() < deadline, "Alertmanager did not become ready"
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            return self.client.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def post(self, *alerts: dict[str, str]) -> None:
        now = datetime.now(UTC)
        body = [
            {
                "labels": labels,
                "annotations": {"summary": "inhibition test"},
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(hours=1)).isoformat(),
            }
            for labels in alerts
        ]
        reply = self.client.post("/api/v2/alerts", json=body)
        assert reply.status_code == 200, reply.text

    def inhibited(self, labels: dict[str, str]) -> bool | None:
        """Whether the alert with exactly these labels is inhibited; None while not received."""
        for alert in self.client.get("/api/v2/alerts").json():
            if alert["labels"] == labels:
                return bool(alert["status"]["inhibitedBy"])
        return None

    def close(self) -> None:
        self.client.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    server = Alertmanager(tmp_path)
    try:
        yield server
    finally:
        server.close()


def _until(alertmanager: Alertmanager, labels: dict[str, str], inhibited: bool) -> None:
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while (state := alertmanager.inhibited(labels)) is not inhibited:
        assert time.monotonic() < deadline, f"{labels}: inhibited={state}, expected {inhibited}"
        time.sleep(0.05)


def test_the_configuration_has_inhibition_rules() -> None:
    assert len(INHIBIT_RULES) >= 5


@pytest.mark.parametrize(
    "rule",
    INHIBIT_RULES,
    ids=[f"{i}-{r['source_matchers'][0]}".replace('"', "") for i, r in enumerate(INHIBIT_RULES)],
)
def test_each_rule_silences_its_targets_and_only_them(
    alertmanager: Alertmanager, rule: dict[str, Any]
) -> None:
    case = _case(rule)
    alerts = [case.source, case.silenced] + ([case.kept] if case.kept else [])
    alertmanager.post(*alerts)
    _until(alertmanager, case.silenced, inhibited=True)
    if case.kept is not None:
        _until(alertmanager, case.kept, inhibited=False)
    _until(alertmanager, case.source, inhibited=False)


def test_a_service_down_silences_its_own_latency_alert_not_another_services(
    alertmanager: Alertmanager,
) -> None:
    down = {"alertname": "ServiceDown", "service": "webhook", "severity": "critical"}
    own = {"alertname": "ApiLatencyHigh", "service": "webhook", "severity": "warning"}
    other = {"alertname": "ApiLatencyHigh", "service": "auth", "severity": "warning"}
    alertmanager.post(down, own, other)
    _until(alertmanager, own, inhibited=True)
    _until(alertmanager, other, inhibited=False)
    _until(alertmanager, down, inhibited=False)
