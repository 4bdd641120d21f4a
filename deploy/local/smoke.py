"""The smoke suite against the played gateway, and the smoke tenant it logs in as."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from deploy.local import stack

SMOKE_EMAIL = "smoke@example.com"
SMOKE_PASSWORD = "smoke passphrase for deploy-local"  # noqa: S105 (a local, throwaway tenant)


def gateway_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def register_smoke_tenant(port: int) -> None:
    """The smoke tenant, registered through the API as an operator would; 409: it exists."""
    reply = httpx.post(
        f"{gateway_url(port)}/v1/auth/register",
        json={"email": SMOKE_EMAIL, "password": SMOKE_PASSWORD, "tenant_name": "smoke"},
        timeout=20,
    )
    if reply.status_code == 409:
        stack.say("smoke tenant exists")
    elif reply.status_code == 200:
        stack.say("smoke tenant registered")
    else:
        raise SystemExit(
            f"deploy-local: registering the smoke tenant: {reply.status_code} {reply.text}"
        )


def run_suite(port: int, pytest_args: Sequence[str] = (), tree: Path | None = None) -> int:
    """tests/smoke of `tree` (a release's source; default this checkout) against the gateway."""
    register_smoke_tenant(port)
    env = os.environ | {
        "GATEWAY_URL": gateway_url(port),
        "SMOKE_EMAIL": SMOKE_EMAIL,
        "SMOKE_PASSWORD": SMOKE_PASSWORD,
        "SMOKE_WEBHOOK_URL": stack.receiver_url(),
    }
    root = tree or stack.REPO
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/smoke",
        "-m",
        "smoke",
        "-p",
        "no:cacheprovider",
        *pytest_args,
    ]
    suite = "this checkout's" if tree is None else f"{tree.name}'s"
    stack.say(f"smoke suite ({suite} tests/smoke) against GATEWAY_URL={env['GATEWAY_URL']}")
    return subprocess.run(command, cwd=root, env=env, check=False).returncode
