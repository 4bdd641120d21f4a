"""Renders the Alertmanager template: `python -m deploy.monitoring.render --out PATH`."""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ALERTMANAGER_TEMPLATE = Path(__file__).parent / "alertmanager" / "alertmanager.yml.tmpl"
DEFAULT_SECRETS_DIR = Path("/etc/alertmanager/secrets")
DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
# The files an operator puts under the secrets directory (docs/monitoring/README.md).
SECRET_FILES = {
    "smtp_password_file": "smtp-password",
    "slack_services_url_file": "slack-services-url",
    "slack_platform_url_file": "slack-platform-url",
    "pagerduty_services_key_file": "pagerduty-services-key",
    "pagerduty_platform_key_file": "pagerduty-platform-key",
}


class RenderError(ValueError):
    """A setting cannot be turned into a valid Alertmanager configuration."""


@dataclass(frozen=True)
class AlertmanagerSettings:
    """Where notifications go; secrets stay in files under `secrets_dir`."""

    secrets_dir: Path
    email_to: str
    email_from: str
    smtp_smarthost: str  # host:port
    smtp_require_tls: bool = True
    pagerduty_url: str = DEFAULT_PAGERDUTY_URL
    # None: the `webhook` receiver has no integration (it still receives, and drops, every alert).
    webhook_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertmanagerSettings:
        """Reads the ALERTMANAGER_* variables; a missing required one is named in the error."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env.get(name) or None  # empty counts as unset, as everywhere else

        def required(name: str) -> str:
            value = get(name)
            if value is None:
                raise RenderError(f"environment variable {name} is required")
            return value

        tls = get("ALERTMANAGER_SMTP_REQUIRE_TLS") or "true"
        if tls not in ("true", "false"):
            raise RenderError(f"ALERTMANAGER_SMTP_REQUIRE_TLS={tls} must be true or false")
        return cls(
            secrets_dir=Path(get("ALERTMANAGER_SECRETS_DIR") or DEFAULT_SECRETS_DIR),
            email_to=required("ALERTMANAGER_EMAIL_TO"),
            email_from=required("ALERTMANAGER_EMAIL_FROM"),
            smtp_smarthost=required("ALERTMANAGER_SMTP_SMARTHOST"),
            smtp_require_tls=tls == "true",
            pagerduty_url=get("ALERTMANAGER_PAGERDUTY_URL") or DEFAULT_PAGERDUTY_URL,
            webhook_url=get("ALERTMANAGER_WEBHOOK_URL"),
        )


def render_alertmanager(settings: AlertmanagerSettings) -> str:
    """The YAML text of alertmanager.yml for `settings`."""
    _check(settings)
    # JSON strings are YAML flow scalars: quoting this way survives any character.
    values = {
        "smtp_smarthost": json.dumps(settings.smtp_smarthost),
        "email_from": json.dumps(settings.email_from),
        "email_to": json.dumps(settings.email_to),
        "smtp_require_tls": json.dumps(settings.smtp_require_tls),
        "pagerduty_url": json.dumps(settings.pagerduty_url),
        "webhook_configs": _webhook_configs(settings.webhook_url),
    }
    for key, name in SECRET_FILES.items():
        values[key] = json.dumps(str(settings.secrets_dir / name))
    return string.Template(ALERTMANAGER_TEMPLATE.read_text()).substitute(values)


def _webhook_configs(url: str | None) -> str:
    if url is None:
        return ""
    return f"    webhook_configs:\n      - url: {json.dumps(url)}\n        send_resolved: true"


def _check(settings: AlertmanagerSettings) -> None:
    for name in ("email_to", "email_from"):
        if "@" not in getattr(settings, name):
            raise RenderError(f"{name}={getattr(settings, name)!r} is not an e-mail address")
    host, _, port = settings.smtp_smarthost.rpartition(":")
    if not host or not port.isdigit():
        raise RenderError(f"smtp_smarthost={settings.smtp_smarthost!r} must be host:port")
    for name in ("pagerduty_url", "webhook_url"):
        url = getattr(settings, name)
        if url is not None and (urlsplit(url).scheme not in ("http", "https") or "\n" in url):
            raise RenderError(f"{name}={url!r} must be an http(s) URL")
    if not settings.secrets_dir.is_absolute():
        raise RenderError(f"secrets_dir={settings.secrets_dir} must be an absolute path")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    try:
        text = render_alertmanager(AlertmanagerSettings.from_env())
    except RenderError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
