"""python -m deploy.local {up,smoke,down,status}: see deploy/local/README.md."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence

from deploy.local import smoke, stack


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
    smoke_parser = commands.add_parser("smoke", help="run tests/smoke against the played gateway")
    smoke_parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    down = commands.add_parser("down", help="stop (SIGTERM, 30 s grace) and remove the pods")
    down.add_argument("--volumes", action="store_true", help="also delete the database volume")
    commands.add_parser("status", help="the played release and its pods")
    rehearse_parser = commands.add_parser(
        "rehearse-rollback",
        help="play release N, then N+1 (this checkout), then roll back to N; smoke and check data "
        "at each step (deletes the deploy-local database first)",
    )
    rehearse_parser.add_argument(
        "--previous",
        default=None,
        help="git ref of release N (default: the commit before the newest migration)",
    )
    rehearse_parser.add_argument(
        "--port", type=int, default=int(os.environ.get("DEPLOY_LOCAL_PORT", "18080"))
    )
    rehearse_parser.add_argument(
        "--current",
        default=None,
        help="image tag of release N+1 (default: this checkout's, as make images tags it)",
    )
    rehearse_parser.add_argument(
        "--keep", action="store_true", help="leave release N running at the end"
    )
    args = parser.parse_args(argv)

    if args.command == "up":
        stack.up(args.tag or stack.git_tag(), args.port, timeout_s=args.timeout)
        return 0
    if args.command == "smoke":
        release = stack.current_release()
        if release is None:
            raise SystemExit("deploy-local: nothing played; run `python -m deploy.local up` first")
        return smoke.run_suite(int(release["port"]), args.pytest_args)
    if args.command == "rehearse-rollback":
        from deploy.local import rehearse

        return rehearse.main(args.previous, args.port, args.keep, args.current)
    if args.command == "down":
        return 1 if stack.down(volumes=args.volumes) else 0
    release = stack.current_release()
    print(json.dumps(release) if release else "no release played")
    subprocess.run(["podman", "pod", "ps"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
