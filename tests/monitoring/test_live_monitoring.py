"""The monitoring stack against the live test stack: targets, rules, every panel, an alert drill.

Starts Debian's Prometheus, Alertmanager and exporters (devstack/monitoring.py) next to the
session stack with 1 s scrape and evaluation intervals (the rules' `for:` shortened, the
Alertmanager configuration rendered from the production template with 1 s grouping), drives a
little API traffic, then: promtool accepts the rendered configuration; every target is up;
every recording rule and every dashboard query parses and returns data (a renamed metric fails
here); one service is stopped and the rules' ServiceDown reaches the webhook, PagerDuty and
Slack receivers (one loopback server) through Alertmanager, then resolves after the restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from deploy.monitoring.config import SINK_PATHS, Intervals
from deploy.monitoring.dashboards.definitions import GPU_ONLY
from deploy.monitoring.snapshot import Prometheus, metric_names_in, panel_queries
from deploy.monitoring.traffic import drive
from devstack import Stack
from devstack.monitoring import Monitoring, MonitoringPorts
from tests.monitoring.tools import run, tool
from tests.unit.webhook.receiver import Receiver, running_receiver

pytestmark = pytest.mark.e2e

# The drill: the rules' own ServiceDown (deploy/monitoring/rules/alerts-services.yml, critical,
# owned by the services team) through the production Alertmanager routes (render.py).
DRILL_ALERT = "ServiceDown"
DRILL_SERVICE = "webhook"
RATE_WINDOW = "10s"  # Grafana's $__rate_interval at 1 s scrapes
ALERTS_PATH = SINK_PATHS["webhook"]

T = TypeVar("T")


def until(check: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` (and the last
    falsy answer) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s (last: {last!r})")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def alert_receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def monitoring(stack: Stack, alert_receiver: Receiver) -> Iterator[Monitoring]:
    with Monitoring(
        stack,
        MonitoringPorts.free(),
        intervals=Intervals(scrape_s=1, evaluation_s=1),
        # Every receiver of the rendered configuration posts to paths of this one.
        alert_sink=alert_receiver.url(""),
        drill=True,
        log=lambda line: print(f"[monitoring] {line}"),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(monitoring: Monitoring, stack: Stack) -> Iterator[Prometheus]:
    client = Prometheus(monitoring.prometheus_url)
    counts = drive(stack.gateway_url, rounds=3, pause_s=0.0)
    assert counts.ok() > 20, counts.by_status
    yield client
    client.close()


def test_promtool_accepts_the_rendered_config(monitoring: Monitoring) -> None:
    # The drill's own files (1 s intervals, shortened rule copies); test_monitoring_config.py
    # checks the production intervals offline.
    result = run(tool("promtool"), "check", "config", monitoring.dir / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_target_is_up(prometheus: Prometheus) -> None:
    def all_up() -> list[dict[str, Any]] | None:
        targets = prometheus.targets()
        down = [t for t in targets if t["health"] != "up"]
        return None if down or not targets else targets

    targets = until(all_up, "every target up")
    jobs = {t["labels"]["job"] for t in targets}
    assert jobs == {
        "auth", "lattice", "webhook", "envoy", "postgres", "redis", "grpc_health", "prometheus",
        "alertmanager",
    }  # fmt: skip
    # Every target carries the service it watches (the metrics contract).
    assert all(t["labels"].get("service") for t in targets), targets


def test_every_recording_rule_returns_data(prometheus: Prometheus) -> None:
    rules = [rule for rule in prometheus.rules() if rule["type"] == "recording"]
    for rule in rules:
        assert rule["health"] != "err", rule
        until(lambda r=rule: prometheus.query(r["name"]), f"recording rule {rule['name']}")


def test_every_dashboard_query_returns_data(prometheus: Prometheus) -> None:
    # Scrapes of the traffic above land over a few seconds, per service and per rule group:
    # every query is polled until it has data, all against one deadline.
    queries = {
        f"{spec.uid} / {panel.title} / {query.legend}: {query.expr}": query
        for spec, panel, query in panel_queries()
    }
    for query in queries.values():
        prometheus.query(query.promql(RATE_WINDOW))  # raises on a syntax error
    pending = {where for where, query in queries.items() if query.may_be_empty is None}
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        pending = {w for w in pending if not prometheus.query(queries[w].promql(RATE_WINDOW))}
        if pending:
            time.sleep(0.25)
    known = prometheus.metric_names()
    unknown = [
        f"{name} in {where}"
        for where, query in queries.items()
        if query.may_be_empty != GPU_ONLY
        for name in sorted(metric_names_in(query.expr) - known)
    ]
    assert not unknown, "metrics Prometheus has never seen:\n" + "\n".join(unknown)
    assert not pending, "queries without data within 30 s:\n" + "\n".join(sorted(pending))


def _notifications(receiver: Receiver) -> list[dict[str, Any]]:
    """Every alert of every Alertmanager webhook notification so far, in order."""
    alerts = []
    for request in receiver.received(ALERTS_PATH):
        alerts += json.loads(request.body)["alerts"]
    return alerts


def _about_drill(alert: dict[str, Any], status: str) -> bool:
    labels = alert["labels"]
    return (
        alert["status"] == status
        and labels.get("alertname") == DRILL_ALERT
        and labels.get("service") == DRILL_SERVICE
    )


def test_a_stopped_service_alerts_and_resolves(
    stack: Stack, prometheus: Prometheus, alert_receiver: Receiver
) -> None:
    until(lambda: prometheus.query(f'up{{job="{DRILL_SERVICE}"}} == 1'), "the service scraped up")
    stack.kill_service(DRILL_SERVICE)
    try:
        until(
            lambda: [a for a in _notifications(alert_receiver) if _about_drill(a, "firing")],
            f"{DRILL_ALERT} firing for {DRILL_SERVICE} at the receiver",
            timeout=30,
        )
        # Critical and the services team's: paged and posted too, per the production routes.
        for receiver in ("pagerduty", "slack-services-url"):
            until(
                lambda r=receiver: alert_receiver.received(SINK_PATHS[r]),
                f"{DRILL_ALERT} at the {receiver} receiver",
                timeout=15,
            )
    finally:
        stack.start_service(DRILL_SERVICE, wait_for_gateway=False)
    until(
        lambda: [a for a in _notifications(alert_receiver) if _about_drill(a, "resolved")],
        f"{DRILL_ALERT} resolved for {DRILL_SERVICE} at the receiver",
        timeout=30,
    )
    stack.wait_for_gateway()
