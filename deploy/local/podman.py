"""The podman calls deploy-local makes: a thin layer over the command line, one job each."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


class PodmanError(RuntimeError):
    """A podman command failed; the message holds the command and its output."""


def available() -> str | None:
    """None when podman can run a container here, else why not (for a skip or an error)."""
    if shutil.which("podman") is None:
        return "podman is not installed (make images installs it: scripts/install-podman.sh)"
    result = subprocess.run(
        ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        return f"podman info failed: {result.stderr.strip()[-300:]}"
    return None


def run(args: Sequence[str], *, stdin: bytes | None = None, timeout: float = 300) -> str:
    """Runs `podman <args>`; its stdout, or PodmanError with what it printed."""
    result = subprocess.run(
        ["podman", *args], input=stdin, capture_output=True, check=False, timeout=timeout
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        raise PodmanError(f"podman {' '.join(args)} failed ({result.returncode}):\n{output}")
    return result.stdout.decode(errors="replace")


def succeeds(args: Sequence[str], *, timeout: float = 30) -> bool:
    """Whether `podman <args>` exits 0 (a probe)."""
    try:
        result = subprocess.run(
            ["podman", *args], capture_output=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def image_exists(reference: str) -> bool:
    return succeeds(["image", "exists", reference])


def ensure_network(name: str) -> str:
    """The network (created when missing, DNS on); returns its first subnet."""
    if not succeeds(["network", "exists", name]):
        run(["network", "create", name])
    info = json.loads(run(["network", "inspect", name]))[0]
    return str(info["subnets"][0]["subnet"])


def replace_secret(name: str, data: bytes) -> None:
    """Podman's secret `name` holds `data` (replaced if present)."""
    if succeeds(["secret", "inspect", name]):
        run(["secret", "rm", name])
    run(["secret", "create", name, "-"], stdin=data)


def remove_secret(name: str) -> None:
    if succeeds(["secret", "inspect", name]):
        run(["secret", "rm", name])


def play(manifest_file: Path, network: str) -> None:
    """`podman kube play --replace`: the pod is (re)created from the file."""
    run(["kube", "play", "--replace", "--network", network, str(manifest_file)], timeout=300)


def stop_pod(name: str, *, stop_timeout_s: int = 30) -> None:
    """SIGTERM (the image's stop signal) to every container, SIGKILL after the grace period."""
    run(["pod", "stop", "--time", str(stop_timeout_s), name], timeout=stop_timeout_s + 30)


def remove_pod(name: str) -> None:
    if succeeds(["pod", "exists", name]):
        run(["pod", "rm", "--force", name])


def pod_containers(name: str) -> list[str]:
    """The pod's containers, without its infra container."""
    info = json.loads(run(["pod", "inspect", name]))
    if isinstance(info, list):
        info = info[0]
    infra = info.get("InfraContainerID", "")
    return [c["Name"] for c in info.get("Containers", []) if c["Id"] != infra]


def pod_exists(name: str) -> bool:
    return succeeds(["pod", "exists", name])


def wait_exit(container: str, timeout: float) -> int:
    """The container's exit code once it has stopped."""
    return int(run(["wait", container], timeout=timeout).strip() or "1")


def container_state(container: str) -> tuple[str, int, int]:
    """(status, exit code, restart count) of a container."""
    out = run(
        [
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}",
            container,
        ]
    ).split()
    return out[0], int(out[1]), int(out[2])


def logs(container: str, tail: int = 40) -> str:
    result = subprocess.run(
        ["podman", "logs", "--tail", str(tail), container],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return (result.stdout + result.stderr).decode(errors="replace")


def exec_ok(container: str, command: Sequence[str], *, timeout: float = 15) -> bool:
    return succeeds(["exec", container, *command], timeout=timeout)


def remove_volume(name: str) -> None:
    if succeeds(["volume", "exists", name]):
        run(["volume", "rm", "--force", name])
