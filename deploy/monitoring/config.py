"""Renders the Prometheus and blackbox-exporter configuration from the stack's addresses, and
the local Alertmanager configuration through render.py's production template.

One renderer for every user: `make monitor` (production intervals) and the live test (short
intervals). Job names and the `service` label on every target are the metrics contract's
(docs/monitoring/running.md); rule files are the glob deploy/monitoring/rules/*.yml.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deploy.monitoring.render import SECRET_FILES, AlertmanagerSettings, render_alertmanager

MONITORING_DIR = Path(__file__).resolve().parent
RULES_DIR = MONITORING_DIR / "rules"
RULES_GLOB = "*.yml"

# The Prometheus `job` of each service's /metrics is the service's own name.
SERVICE_JOBS = ("auth", "lattice", "webhook")


@dataclass(frozen=True)
class Targets:
    """Where everything Prometheus scrapes listens (host:port each)."""

    metrics: Mapping[str, str]  # service -> its /metrics listener
    grpc: Mapping[str, str]  # service -> its gRPC server (probed for health)
    envoy_admin: str
    postgres_exporter: str
    redis_exporter: str
    blackbox: str
    alertmanager: str
    prometheus: str


@dataclass(frozen=True)
class Intervals:
    """Scrape and rule evaluation periods: 15 s in production, 1 s for the live drill."""

    scrape_s: float = 15.0
    evaluation_s: float = 15.0

    @property
    def scrape_timeout_s(self) -> float:
        # Prometheus refuses a timeout longer than the interval.
        return min(10.0, self.scrape_s)


@dataclass(frozen=True)
class RuleFiles:
    """The rule files Prometheus loads: globs or paths (Prometheus expands globs itself)."""

    patterns: Sequence[str] = field(default_factory=lambda: [str(RULES_DIR / RULES_GLOB)])

    def files(self) -> list[Path]:
        """The files the patterns name right now (for tests and promtool)."""
        found: list[Path] = []
        for pattern in self.patterns:
            path = Path(pattern)
            found.extend(sorted(path.parent.glob(path.name)))
        return found


PRODUCTION = Intervals()
DEFAULT_RULES = RuleFiles()


def _duration(seconds: float) -> str:
    """Prometheus duration syntax: whole seconds as `15s`, fractions as milliseconds."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def _static(job: str, address: str, service: str, **extra: Any) -> dict[str, Any]:
    return {
        "job_name": job,
        **extra,
        "static_configs": [{"targets": [address], "labels": {"service": service}}],
    }


def health_module(service: str) -> str:
    """The blackbox module that probes one service's gRPC health (prober: grpc)."""
    return f"grpc_{service}"


def prometheus_config(
    targets: Targets, intervals: Intervals = PRODUCTION, rules: RuleFiles = DEFAULT_RULES
) -> dict[str, Any]:
    """prometheus.yml as a dict: the scrape jobs of the metrics contract and the rule files."""
    jobs: list[dict[str, Any]] = [
        _static(name, targets.metrics[name], name) for name in SERVICE_JOBS
    ]
    jobs += [
        _static("envoy", targets.envoy_admin, "gateway", metrics_path="/stats/prometheus"),
        _static("postgres", targets.postgres_exporter, "postgres"),
        _static("redis", targets.redis_exporter, "redis"),
        {
            # One probe per service, through the blackbox exporter; the module is chosen from
            # the target's `service` label, and `instance` stays the probed service.
            "job_name": "grpc_health",
            "metrics_path": "/probe",
            "static_configs": [
                {"targets": [targets.grpc[name]], "labels": {"service": name}}
                for name in SERVICE_JOBS
            ],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {
                    "source_labels": ["service"],
                    "target_label": "__param_module",
                    "replacement": health_module("$1"),
                },
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": targets.blackbox},
            ],
        },
        _static("prometheus", targets.prometheus, "prometheus"),
        _static("alertmanager", targets.alertmanager, "alertmanager"),
    ]
    return {
        "global": {
            "scrape_interval": _duration(intervals.scrape_s),
            "scrape_timeout": _duration(intervals.scrape_timeout_s),
            "evaluation_interval": _duration(intervals.evaluation_s),
        },
        "rule_files": list(rules.patterns),
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [targets.alertmanager]}]}]},
        "scrape_configs": jobs,
    }


def blackbox_config(health_names: Mapping[str, str]) -> dict[str, Any]:
    """blackbox.yml: a `prober: grpc` module per service, checking its full health name
    (e.g. catalytic.auth.v1.AuthService) over plaintext on loopback."""
    return {
        "modules": {
            health_module(name): {
                "prober": "grpc",
                "timeout": "2s",
                "grpc": {
                    "service": full_name,
                    "tls": False,
                    "preferred_ip_protocol": "ip4",
                },
            }
            for name, full_name in health_names.items()
        }
    }


_DURATION_PART = re.compile(r"(\d+)(ms|[smhdwy])")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def shortened_rules(
    sources: Sequence[Path], dest: Path, max_for_s: float, max_interval_s: float | None = None
) -> list[Path]:
    """Copies of the rule files with every `for:` capped at `max_for_s` (the live drill: an
    alert that waits minutes in production fires within seconds) and every group's own
    `interval:` at `max_interval_s` (the 30-day SLI, evaluated every 5 min in production);
    the expressions unchanged."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        document = yaml.safe_load(source.read_text()) or {}
        for group in document.get("groups", []):
            interval = group.get("interval")
            if max_interval_s is not None and interval and _seconds(interval) > max_interval_s:
                group["interval"] = _duration(max_interval_s)
            for rule in group.get("rules", []):
                if "for" in rule and _seconds(str(rule["for"])) > max_for_s:
                    rule["for"] = _duration(max_for_s)
        target = dest / source.name
        write_yaml(target, document)
        written.append(target)
    return written


def _seconds(duration: str) -> float:
    """Seconds in a Prometheus duration such as `1m30s` or `500ms`."""
    return sum(int(count) * _UNIT_SECONDS[unit] for count, unit in _DURATION_PART.findall(duration))


def write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False))


# The receivers' endpoints of a local run, as paths under one loopback sink (the live test's
# receiver, or devstack's own that logs what it gets): nothing leaves the machine.
SINK_PATHS = {
    "webhook": "/alerts",
    "pagerduty": "/pagerduty",
    "slack-services-url": "/slack-services",
    "slack-platform-url": "/slack-platform",
}
# Nothing listens there: `info` alerts' e-mails fail locally (Alertmanager logs it).
LOCAL_SMTP = "127.0.0.1:25"


def local_alertmanager_settings(
    secrets_dir: Path, sink_url: str, webhook_url: str | None = None
) -> AlertmanagerSettings:
    """The production template's settings for a local run: PagerDuty, Slack and the `webhook`
    receiver post to `sink_url` (http://host:port) paths, unless `webhook_url` is given; the
    secret files are written under `secrets_dir` (loopback URLs and dummy keys)."""
    sink = sink_url.rstrip("/")
    settings = AlertmanagerSettings(
        secrets_dir=secrets_dir.resolve(),
        email_to="oncall@localhost.test",
        email_from="alertmanager@localhost.test",
        smtp_smarthost=LOCAL_SMTP,
        smtp_require_tls=False,
        pagerduty_url=sink + SINK_PATHS["pagerduty"],
        webhook_url=webhook_url or sink + SINK_PATHS["webhook"],
    )
    secrets = {
        "smtp-password": "local",
        "pagerduty-services-key": "local-services",
        "pagerduty-platform-key": "local-platform",
        "slack-services-url": sink + SINK_PATHS["slack-services-url"],
        "slack-platform-url": sink + SINK_PATHS["slack-platform-url"],
    }
    assert set(secrets) == set(SECRET_FILES.values())
    secrets_dir.mkdir(parents=True, exist_ok=True)
    for name, value in secrets.items():
        (secrets_dir / name).write_text(value + "\n")
    return settings


def local_alertmanager_yaml(settings: AlertmanagerSettings, *, fast: bool = False) -> str:
    """render_alertmanager's text (the production routes, inhibition and receivers); `fast`
    (the live drill) shortens every group_wait and group_interval to a second, as the drill's
    rule copies shorten `for:`."""
    text = render_alertmanager(settings)
    if not fast:
        return text
    document = yaml.safe_load(text)
    routes = [document["route"]]
    while routes:
        route = routes.pop()
        for key in ("group_wait", "group_interval"):
            if key in route or route is document["route"]:
                route[key] = "1s"
        routes.extend(route.get("routes", []))
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
