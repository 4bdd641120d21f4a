"""The generated monitoring configuration: Prometheus's, blackbox's and Alertmanager's own
checkers accept it, and the committed Grafana files are what the definitions generate."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from deploy.monitoring.config import (
    DEFAULT_RULES,
    Intervals,
    RuleFiles,
    Targets,
    blackbox_config,
    local_alertmanager_config,
    prometheus_config,
    shortened_rules,
    write_yaml,
)
from deploy.monitoring.dashboards.__main__ import generated
from deploy.monitoring.dashboards.definitions import DASHBOARDS
from deploy.monitoring.snapshot import metric_names_in
from devstack.monitoring import program
from devstack.services import SERVICES

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


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    for intervals in (Intervals(), Intervals(scrape_s=1, evaluation_s=1)):
        path = tmp_path / "prometheus.yml"
        write_yaml(path, prometheus_config(TARGETS, intervals, DEFAULT_RULES))
        result = _run(str(program("promtool")), "check", "config", str(path))
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
    assert config["global"]["scrape_interval"] == "15s"


def test_blackbox_accepts_a_grpc_module_per_service(tmp_path: Path) -> None:
    path = tmp_path / "blackbox.yml"
    write_yaml(path, blackbox_config(SERVICES))
    result = _run(
        str(program("prometheus-blackbox-exporter")), f"--config.file={path}", "--config.check"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    modules = yaml.safe_load(path.read_text())["modules"]
    assert {m["grpc"]["service"] for m in modules.values()} == set(SERVICES.values())
    assert {m["prober"] for m in modules.values()} == {"grpc"}


def test_amtool_accepts_the_local_alertmanager_config(tmp_path: Path) -> None:
    for webhook in (None, "http://127.0.0.1:1/alerts"):
        path = tmp_path / "alertmanager.yml"
        write_yaml(path, local_alertmanager_config(webhook, fast=webhook is not None))
        result = _run(str(program("amtool")), "check-config", str(path))
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_drill_caps_for_durations_and_keeps_the_rest(tmp_path: Path) -> None:
    source = tmp_path / "src" / "a.yml"
    write_yaml(
        source,
        {
            "groups": [
                {
                    "name": "g",
                    "rules": [
                        {"alert": "Slow", "expr": "up == 0", "for": "5m"},
                        {"alert": "Quick", "expr": "up == 0", "for": "1s"},
                        {"record": "job:up:min", "expr": "min by (job) (up)"},
                    ],
                }
            ]
        },
    )
    (copy,) = shortened_rules([source], tmp_path / "out", max_for_s=2)
    rules = yaml.safe_load(copy.read_text())["groups"][0]["rules"]
    assert [rule.get("for") for rule in rules] == ["2s", "1s", None]
    assert RuleFiles([str(tmp_path / "out" / "*.yml")]).files() == [copy]


def test_the_committed_grafana_files_are_generated() -> None:
    stale = [str(path) for path, text in generated().items() if path.read_text() != text]
    assert not stale, f"run `make dashboards`: {stale}"


def test_every_panel_answers_a_question_with_known_metric_names() -> None:
    for spec in DASHBOARDS:
        for panel in spec.panels():
            assert panel.question.endswith("?"), panel.title
            for query in panel.queries:
                names = metric_names_in(query.expr)
                assert names, query.expr
                assert all(
                    n.startswith(("catalytic_", "envoy_", "pg_", "redis_", "probe_", "process_"))
                    or n == "up"
                    for n in names
                ), query.expr
