"""The rendered Alertmanager configuration is valid and routes each severity and service."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.monitoring.render import (
    SECRET_FILES,
    AlertmanagerSettings,
    RenderError,
    render_alertmanager,
)
from tests.monitoring.tools import run, tool

TEAMS = {
    "services": ("auth", "lattice", "webhook"),
    "platform": ("gateway", "postgres", "redis", "prometheus", "alertmanager"),
}
SETTINGS = AlertmanagerSettings(
    secrets_dir=Path("/etc/alertmanager/secrets"),
    email_to="oncall@example.test",
    email_from="alertmanager@example.test",
    smtp_smarthost="smtp.example.test:587",
    webhook_url="http://127.0.0.1:9099/alerts",
)


def _expected(team: str, severity: str | None) -> str:
    # Every alert reaches the webhook first; then critical pages and posts, warning posts,
    # info (and anything without a severity) is mailed.
    if severity == "critical":
        return f"webhook,pagerduty-{team},slack-{team}"
    if severity == "warning":
        return f"webhook,slack-{team}"
    return "webhook,email"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager(SETTINGS))
    return path


def test_config_is_valid(config: Path) -> None:
    result = run(tool("amtool"), "check-config", config)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("severity", ["critical", "warning", "info", None])
@pytest.mark.parametrize(
    ("team", "service"), [(team, service) for team, names in TEAMS.items() for service in names]
)
def test_route(config: Path, team: str, service: str, severity: str | None) -> None:
    labels = ["alertname=Test", f"service={service}"]
    if severity is not None:
        labels.append(f"severity={severity}")
    expected = _expected(team, severity)
    result = run(
        tool("amtool"), "config", "routes", "test", f"--config.file={config}",
        f"--verify.receivers={expected}", *labels,
    )  # fmt: skip
    assert result.returncode == 0, f"{labels}: {result.stdout.strip()} (expected {expected})"


def test_unknown_service_goes_to_the_platform_team(config: Path) -> None:
    result = run(
        tool("amtool"), "config", "routes", "test", f"--config.file={config}",
        "--verify.receivers=webhook,pagerduty-platform,slack-platform",
        "alertname=PrometheusTargetDown", "job=alertmanager", "severity=critical",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_secrets_are_files_under_the_secrets_dir(config: Path) -> None:
    text = config.read_text()
    for name in SECRET_FILES.values():
        assert f'"/etc/alertmanager/secrets/{name}"' in text
    for option in ("routing_key:", "service_key:", "api_url:", "smtp_auth_password:"):
        assert option not in text


def test_without_a_webhook_url_the_webhook_receiver_drops(tmp_path: Path) -> None:
    settings = AlertmanagerSettings(
        secrets_dir=SETTINGS.secrets_dir,
        email_to=SETTINGS.email_to,
        email_from=SETTINGS.email_from,
        smtp_smarthost=SETTINGS.smtp_smarthost,
    )
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager(settings))
    assert "webhook_configs" not in path.read_text()
    result = run(tool("amtool"), "check-config", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_from_env_reads_the_variables() -> None:
    settings = AlertmanagerSettings.from_env(
        {
            "ALERTMANAGER_EMAIL_TO": "a@example.test",
            "ALERTMANAGER_EMAIL_FROM": "b@example.test",
            "ALERTMANAGER_SMTP_SMARTHOST": "smtp:25",
            "ALERTMANAGER_SMTP_REQUIRE_TLS": "false",
            "ALERTMANAGER_WEBHOOK_URL": "",
        }
    )
    assert settings.email_to == "a@example.test"
    assert settings.smtp_require_tls is False
    assert settings.webhook_url is None
    assert settings.secrets_dir == Path("/etc/alertmanager/secrets")


def test_from_env_names_a_missing_variable() -> None:
    with pytest.raises(RenderError, match="ALERTMANAGER_EMAIL_TO"):
        AlertmanagerSettings.from_env({})


@pytest.mark.parametrize(
    "change",
    [
        {"email_to": "nobody"},
        {"smtp_smarthost": "smtp"},
        {"webhook_url": "file:///etc/passwd"},
        {"pagerduty_url": "https://x.test/\nreceivers: []"},
        {"secrets_dir": Path("relative")},
    ],
)
def test_bad_settings_are_refused(change: dict[str, object]) -> None:
    fields = {**SETTINGS.__dict__, **change}
    with pytest.raises(RenderError):
        render_alertmanager(AlertmanagerSettings(**fields))  # type: ignore[arg-type]
