"""python -m deploy.local {up,smoke,down,status}: see deploy/local/README.md."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from deploy.local import stack

SMOKE_EMAIL = "smoke@example.com"
SMOKE_PASSWORD = "smoke passphrase for deploy-local"  # noqa: S105 (a local, throwaway tenant)


def register_smoke_tenant(port: int) -> None:
    """The smoke tenant, registered through the API as an operator would; 409: it exists."""
    body = json.dumps(
        {"email": SMOKE_EMAIL, "password": SMOKE_PASSWORD, "tenant_name": "smoke"}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/auth/register",
        data=body,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:  # noqa: S310
            stack.say(f"smoke tenant registered ({reply.status})")
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise SystemExit(
                f"deploy-local: registering the smoke tenant: {exc.code} {exc.read()!r}"
            ) from None
        stack.say("smoke tenant exists")


def smoke(port: int, pytest_args: Sequence[str] = ()) -> int:
    register_smoke_tenant(port)
    env = os.environ | {
        "GATEWAY_URL": f"http://127.0.0.1:{port}",
        "SMOKE_EMAIL": SMOKE_EMAIL,
        "SMOKE_PASSWORD": SMOKE_PASSWORD,
        "SMOKE_WEBHOOK_URL": stack.receiver_url(),
    }
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
    stack.say(f"smoke suite against GATEWAY_URL={env['GATEWAY_URL']}")
    return subprocess.run(command, cwd=stack.REPO, env=env, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local",
        description="Run the Kubernetes dev overlay (deploy/k8s/overlays/dev) with podman kube "
        "play on loopback, and smoke-test it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="play the pods and wait until the gateway is healthy")
    up.add_argument(
        "--tag", default=None, help="image tag (default: this checkout's, as make images tags)"
    )
    up.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("DEPLOY_LOCAL_PORT", "18080")),
        help="loopback port of the gateway (default 18080, or DEPLOY_LOCAL_PORT)",
    )
    up.add_argument("--timeout", type=float, default=180, help="seconds to wait per pod")
    smoke_cmd = commands.add_parser("smoke", help="run tests/smoke against the played gateway")
    smoke_cmd.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    down = commands.add_parser("down", help="stop (SIGTERM, 30 s grace) and remove the pods")
    down.add_argument("--volumes", action="store_true", help="also delete the database volume")
    commands.add_parser("status", help="the played release and its pods")
    args = parser.parse_args(argv)

    if args.command == "up":
        stack.up(args.tag or stack.git_tag(), args.port, timeout_s=args.timeout)
        return 0
    if args.command == "smoke":
        release = stack.current_release()
        if release is None:
            raise SystemExit("deploy-local: nothing played; run `python -m deploy.local up` first")
        return smoke(int(release["port"]), args.pytest_args)
    if args.command == "down":
        return 1 if stack.down(volumes=args.volumes) else 0
    release = stack.current_release()
    print(json.dumps(release) if release else "no release played")
    subprocess.run(["podman", "pod", "ps"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
