"""The generated monitoring configuration: Prometheus's, blackbox's and Alertmanager's own
checkers accept it, and the committed Grafana files are what the definitions generate."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from deploy.monitoring.config import (
    DEFAULT_RULES,
    RULES_DIR,
    Intervals,
    RuleFiles,
    Targets,
    blackbox_config,
    local_alertmanager_settings,
    local_alertmanager_yaml,
    prometheus_config,
    shortened_rules,
    write_yaml,
)
from deploy.monitoring.dashboards.__main__ import generated
from deploy.monitoring.dashboards.definitions import DASHBOARDS
from deploy.monitoring.dashboards.panels import SERVER_ERROR_CODES
from deploy.monitoring.render import render_alertmanager
from deploy.monitoring.snapshot import metric_names_in
from devstack.services import SERVICES
from tests.monitoring.tools import run as _run
from tests.monitoring.tools import tool

TARGETS = Targets(
    metrics={"auth": "127.0.0.1:9101", "lattice": "127.0.0.1:9102", "webhook": "127.0.0.1:9103"},
    grpc={"auth": "127.0.0.1:50051", "lattice": "127.0.0.1:50052", "webhook": "127.0.0.1:50053"},
    envoy_admin="127.0.0.1:9901",
    postgres_exporter="127.0.0.1:9187",
    redis_exporter="127.0.0.1:9121",
    blackbox="127.0.0.1:9115",
    alertmanager="127.0.0.1:9093",
    prometheus="127.0.0.1:9090",
)


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    for intervals in (Intervals(), Intervals(scrape_s=1, evaluation_s=1)):
        path = tmp_path / "prometheus.yml"
        write_yaml(path, prometheus_config(TARGETS, intervals, DEFAULT_RULES))
        result = _run(tool("promtool"), "check", "config", str(path))
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_job_of_the_contract_with_its_service_label() -> None:
    config = prometheus_config(TARGETS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {
        "auth", "lattice", "webhook", "envoy", "postgres", "redis", "grpc_health", "prometheus",
        "alertmanager",
    }  # fmt: skip
    for job in jobs.values():
        for group in job["static_configs"]:
            assert group["labels"]["service"], job
    assert jobs["envoy"]["static_configs"][0]["labels"]["service"] == "gateway"
    # docs/monitoring/README.md's time to detect assumes these.
    assert config["global"] == {
        "scrape_interval": "15s",
        "scrape_timeout": "10s",
        "evaluation_interval": "15s",
    }


def test_blackbox_accepts_a_grpc_module_per_service(tmp_path: Path) -> None:
    path = tmp_path / "blackbox.yml"
    write_yaml(path, blackbox_config(SERVICES))
    result = _run(tool("prometheus-blackbox-exporter"), f"--config.file={path}", "--config.check")
    assert result.returncode == 0, result.stdout + result.stderr
    modules = yaml.safe_load(path.read_text())["modules"]
    assert {m["grpc"]["service"] for m in modules.values()} == set(SERVICES.values())
    assert {m["prober"] for m in modules.values()} == {"grpc"}


def test_the_local_alertmanager_config_is_the_rendered_template(tmp_path: Path) -> None:
    sink = "http://127.0.0.1:1"
    for webhook in (None, "http://127.0.0.1:2/alerts"):
        settings = local_alertmanager_settings(tmp_path / "secrets", sink, webhook)
        assert settings.webhook_url == (webhook or f"{sink}/alerts")
        assert settings.pagerduty_url == f"{sink}/pagerduty"
        assert (tmp_path / "secrets" / "slack-services-url").read_text().strip() == (
            f"{sink}/slack-services"
        )
        for fast in (False, True):
            text = local_alertmanager_yaml(settings, fast=fast)
            path = tmp_path / "alertmanager.yml"
            path.write_text(text)
            result = _run(tool("amtool"), "check-config", str(path))
            assert result.returncode == 0, result.stdout + result.stderr
            # The production routes: a service down pages its team, posts, and is logged.
            result = _run(
                tool("amtool"), "config", "routes", "test", f"--config.file={path}",
                "--verify.receivers=webhook,pagerduty-services,slack-services",
                "alertname=ServiceDown", "service=webhook", "severity=critical",
            )  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
            document = yaml.safe_load(text)
            rendered = yaml.safe_load(render_alertmanager(settings))
            assert document["inhibit_rules"] == rendered["inhibit_rules"]
            assert document["receivers"] == rendered["receivers"]
            route = document["route"]
            waits = [route["group_wait"]] + [
                child["group_wait"] for child in route["routes"] if "group_wait" in child
            ]
            assert set(waits) == ({"1s"} if fast else {"30s", "10s"})


def test_the_drill_caps_for_durations_and_keeps_the_rest(tmp_path: Path) -> None:
    source = tmp_path / "src" / "a.yml"
    write_yaml(
        source,
        {
            "groups": [
                {
                    "name": "g",
                    "interval": "5m",
                    "rules": [
                        {"alert": "Slow", "expr": "up == 0", "for": "5m"},
                        {"alert": "Quick", "expr": "up == 0", "for": "1s"},
                        {"record": "job:up:min", "expr": "min by (job) (up)"},
                    ],
                }
            ]
        },
    )
    (copy,) = shortened_rules([source], tmp_path / "out", max_for_s=2, max_interval_s=1)
    group = yaml.safe_load(copy.read_text())["groups"][0]
    assert group["interval"] == "1s"
    rules = group["rules"]
    assert [rule.get("for") for rule in rules] == ["2s", "1s", None]
    assert RuleFiles([str(tmp_path / "out" / "*.yml")]).files() == [copy]


def test_the_committed_grafana_files_are_generated() -> None:
    stale = [str(path) for path, text in generated().items() if path.read_text() != text]
    assert not stale, f"run `make dashboards`: {stale}"


def _listed_metrics() -> set[str]:
    """deploy/monitoring/metrics.txt's names, histograms with their three series."""
    names = set()
    for line in (RULES_DIR.parent / "metrics.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind = line.split()[:2]
            suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
            names |= {name + suffix for suffix in suffixes}
    return names


def _recorded() -> set[str]:
    names = set()
    for path in DEFAULT_RULES.files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {rule["record"] for rule in group["rules"] if "record" in rule}
    return names


def test_every_panel_answers_a_question_with_known_metric_names() -> None:
    # The services' metrics are metrics.txt's; recording rules the rules'; the rest exporters'.
    listed, recorded = _listed_metrics(), _recorded()
    for spec in DASHBOARDS:
        for panel in spec.panels():
            assert panel.question.endswith("?"), panel.title
            for query in panel.queries:
                names = metric_names_in(query.expr)
                assert names, query.expr
                for name in names:
                    if name.startswith("catalytic_"):
                        assert name in listed, f"{name} is not in metrics.txt: {query.expr}"
                    elif ":" in name:
                        assert name in recorded, f"{name} is no recording rule: {query.expr}"
                    else:
                        assert (
                            name.startswith(("envoy_", "pg_", "redis_", "probe_", "process_"))
                            or name == "up"
                        ), query.expr


def test_the_panels_count_the_same_server_faults_as_the_rules() -> None:
    text = (DEFAULT_RULES.files()[0].parent / "sli.yml").read_text()
    codes = set(re.findall(r'code=~"([A-Z_|]+)"', text))
    assert codes == {"|".join(SERVER_ERROR_CODES)}, codes
