"""deploy-local: the dev overlay, rendered by kustomize, played by podman on loopback.

`up` renders deploy/k8s/overlays/dev, adapts it (adapt.py: every change printed), creates the
Secrets an operator would (generated once, kept under .run/deploy-local/ so a redeploy keeps
its keys), plays the pods stage by stage and waits for each: the data stores ready, the
migration pod exited 0, the services ready by their own readiness probes (run inside the pod:
podman ignores gRPC probes), the gateway's /healthz 200 on 127.0.0.1. `down` removes the pods
(and with `volumes=True` the database's volume).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.local import podman
from deploy.local.adapt import Manifest, Plan, PodPlan, Settings, adapt, podman_secret

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "deploy" / "k8s" / "overlays" / "dev"
STATE = REPO / ".run" / "deploy-local"
NETWORK = "catalytic-dev"
DATASTORES_IMAGE = "localhost/catalytic/datastores:bookworm"
APP_IMAGES = ("auth", "lattice", "webhook", "gateway")
RECEIVER = "smoke-receiver"
RECEIVER_PORT = 8090
# The local receiver the webhook smoke test delivers to: 204 to every POST, in the services
# image (the one image here with Python). Not part of the overlay; named so in the output.
RECEIVER_SCRIPT = """
import http.server, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
""".replace("PORT", str(RECEIVER_PORT))
# grpc.health.v1 Check, as the kubelet's gRPC probe sends it: argv port [service].
GRPC_PROBE = """
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
port, service = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=2)
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
"""


def say(message: str) -> None:
    print(f"deploy-local: {message}", flush=True)


def git_tag() -> str:
    """The tag `make images` gives this checkout: the short sha, `-dirty` with local changes."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"{sha}-dirty" if dirty else sha


def kubectl() -> str:
    found = shutil.which("kubectl") or str(REPO / ".venv-checkov" / "bin" / "kubectl")
    if not Path(found).exists():
        raise SystemExit("deploy-local: kubectl not found; `make checkov` installs one")
    return found


def render(overlay: Path = OVERLAY) -> list[Manifest]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"deploy-local: kubectl kustomize {overlay} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass(frozen=True)
class LocalSecrets:
    """The six Secrets of deploy/k8s/README.md, with dev values, kept under `root`."""

    root: Path

    def ensure(self) -> dict[str, dict[str, str]]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        token_file = self.root / "internal-token"
        if not token_file.exists():
            token_file.write_text(secrets.token_urlsafe(48))
            token_file.chmod(0o600)
        keys = self.root / "files" / "jwt-keys"
        if not any(keys.glob("*.pem")):
            from services.auth.keys import generate_key

            generate_key(keys)
        # The auth container runs as uid 10001 and reads the keys (the Secret's defaultMode 0440).
        keys.chmod(0o750)
        for pem in keys.glob("*.pem"):
            pem.chmod(0o440)
            _chown(pem, 10001)
        _chown(keys, 10001)
        # The webhook container (uid 10001) reads its key-encryption keys the same way.
        kek = self.root / "files" / "webhook-kek"
        if not any(kek.glob("*.key")):
            from services.common.keys.files import FileKekRing

            FileKekRing(kek).create()
        kek.chmod(0o750)
        for key in kek.glob("*.key"):
            key.chmod(0o440)
            _chown(key, 10001)
        _chown(kek, 10001)
        # The dev overlay's PostgreSQL trusts the platform's pods (deploy/k8s/README.md).
        return {
            "database": {"DATABASE_URL": "postgresql://catalytic_app@postgres:5432/catalytic"},
            "database-admin": {
                "DATABASE_ADMIN_URL": "postgresql://catalytic_admin@postgres:5432/catalytic"
            },
            "redis": {"REDIS_URL": "redis://redis:6379/0"},
            "internal-token": {"INTERNAL_TOKEN": token_file.read_text().strip()},
        }

    @property
    def files_dir(self) -> Path:
        return self.root / "files"


def _chown(path: Path, uid: int, gid: int | None = None) -> None:
    # Rootless podman maps ids itself: there the files stay the caller's.
    with contextlib.suppress(PermissionError):
        os.chown(path, uid, uid if gid is None else gid)


def app_images(tag: str, gateway_tag: str | None = None) -> dict[str, str]:
    """The platform's images of release `tag` (the gateway's may come from another)."""
    return {
        f"catalytic/{name}": f"localhost/catalytic/{name}:{gateway_tag or tag}"
        if name == "gateway"
        else f"localhost/catalytic/{name}:{tag}"
        for name in APP_IMAGES
    }


def settings_for(
    images: Mapping[str, str],
    port: int,
    secret_values: Mapping[str, Mapping[str, str]],
    subnet: str,
) -> Settings:
    images = dict(images)
    images |= {"postgres": DATASTORES_IMAGE, "redis": DATASTORES_IMAGE}
    return Settings(
        images=images,
        gateway_port=port,
        secrets=secret_values,
        secret_files_dir=str(LocalSecrets(STATE / "secrets").files_dir),
        scratch_dir=str(STATE / "scratch"),
        # The smoke receiver lives on the podman network: a private address the webhook's SSRF
        # guard refuses unless allowed, as an operator allows an internal receiver.
        extra_env={"webhook": {"WEBHOOK_ALLOW_CIDRS": subnet}},
    )


def missing_images(images: Mapping[str, str]) -> list[str]:
    wanted = [*images.values(), DATASTORES_IMAGE]
    return [image for image in wanted if not podman.image_exists(image)]


def describe(plan: Plan) -> None:
    say("what podman does not implement (not played):")
    for kind, names in sorted(plan.not_played.items()):
        from deploy.local.adapt import NOT_PLAYED

        reason = NOT_PLAYED.get(kind, "not a kind podman plays")
        say(f"  {kind} ({', '.join(sorted(names))}): {reason}")
    say("how the pods differ from the manifests:")
    for adaptation in plan.adaptations:
        say(f"  {adaptation}")


def write_pod_file(pod: PodPlan) -> Path:
    pods_dir = STATE / "pods"
    pods_dir.mkdir(parents=True, exist_ok=True)
    path = pods_dir / f"{pod.name}.yaml"
    path.write_text(yaml.safe_dump_all([*pod.configmaps, pod.manifest], sort_keys=False))
    return path


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout_s: float,
    on_timeout: Callable[[], str] = lambda: "",
) -> float:
    """Seconds it took for `check` to hold; SystemExit naming `what` after `timeout_s`."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"deploy-local: {what} not within {timeout_s:.0f} s\n{on_timeout()}")
        time.sleep(1)


def readiness_check(pod: PodPlan, container: Manifest) -> Callable[[], bool]:
    """The container's readinessProbe, run the way the kubelet would, inside the pod."""
    name = f"{pod.name}-{container['name']}"
    probe: dict[str, Any] = container.get("readinessProbe") or container.get("startupProbe") or {}

    def running() -> bool:
        try:
            status, _, _ = podman.container_state(name)
        except podman.PodmanError:
            return False
        return status == "running"

    if "grpc" in probe:
        grpc = probe["grpc"]
        args = ["python", "-c", GRPC_PROBE, str(grpc["port"])]
        if grpc.get("service"):
            args.append(grpc["service"])
        return lambda: running() and podman.exec_ok(name, args)
    if "exec" in probe:
        command = probe["exec"]["command"]
        return lambda: running() and podman.exec_ok(name, command)
    return running


def diagnose(pod: PodPlan) -> str:
    lines = []
    for container in [*pod.manifest["spec"].get("initContainers", []), *pod.containers]:
        name = f"{pod.name}-{container['name']}"
        try:
            status, code, restarts = podman.container_state(name)
        except podman.PodmanError as exc:
            lines.append(f"--- {name}: {exc}")
            continue
        lines.append(f"--- {name}: {status}, exit {code}, {restarts} restarts; last log lines:")
        lines.append(podman.logs(name, tail=15))
    return "\n".join(lines)


def fresh_dirs(pod: PodPlan, host_dirs: Sequence[tuple[str, int, int]]) -> None:
    """The pod's emptyDir stand-ins, empty and owned by its user (as a new emptyDir would be)."""
    for path, uid, gid in host_dirs:
        if f"/scratch/{pod.name}/" not in path:
            continue
        directory = Path(path)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, mode=0o770)
        _chown(directory, uid, gid)


def play_pod(
    pod: PodPlan, timeout_s: float, host_dirs: Sequence[tuple[str, int, int]] = ()
) -> None:
    start = time.monotonic()
    fresh_dirs(pod, host_dirs)
    podman.play(write_pod_file(pod), NETWORK)
    if pod.run_to_completion:
        job = f"{pod.name}-{pod.containers[0]['name']}"
        code = podman.wait_exit(job, timeout_s)
        if code != 0:
            raise SystemExit(f"deploy-local: {pod.name} exited {code}\n{diagnose(pod)}")
        say(f"{pod.name}: completed in {time.monotonic() - start:.1f} s")
        return
    for container in pod.containers:
        wait_until(
            f"{pod.name}/{container['name']} ready",
            readiness_check(pod, container),
            timeout_s,
            lambda: diagnose(pod),
        )
    say(f"{pod.name}: ready in {time.monotonic() - start:.1f} s")


def gateway_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_receiver(image: str) -> None:
    """The webhook smoke test's receiver: a pod on the network, outside the overlay."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": RECEIVER},
        "spec": {
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "receiver",
                    "image": image,
                    "imagePullPolicy": "Never",
                    # One line: podman 4.3's YAML reader trips on a block scalar here.
                    "command": ["python", "-c", _one_line(RECEIVER_SCRIPT)],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    pod = PodPlan(name=RECEIVER, stage="services", manifest=manifest, configmaps=())
    play_pod(pod, 60)


def _one_line(script: str) -> str:
    encoded = base64.b64encode(script.encode()).decode()
    return f"import base64; exec(base64.b64decode('{encoded}'))"


def receiver_url() -> str:
    return f"http://{RECEIVER}:{RECEIVER_PORT}/smoke"


def up(
    tag: str,
    port: int,
    *,
    gateway_tag: str | None = None,
    timeout_s: float = 180,
    stages: tuple[str, ...] | None = None,
    receiver: bool = True,
    quiet: bool = False,
) -> Plan:
    """Plays the dev overlay's release `tag` (all stages, or those named; a rollback replays
    only the services and the gateway); returns the plan it played."""
    problem = podman.available()
    if problem:
        raise SystemExit(f"deploy-local: {problem}")
    images = app_images(tag, gateway_tag)
    missing = missing_images(images)
    if missing:
        raise SystemExit(
            f"deploy-local: missing image(s) {', '.join(missing)}; `make images` builds them "
            "(and scripts/build-datastores-image.sh the data stores')"
        )
    subnet = podman.ensure_network(NETWORK)
    secret_values = LocalSecrets(STATE / "secrets").ensure()
    plan = adapt(render(), settings_for(images, port, secret_values, subnet))
    say(f"release {tag} of {OVERLAY.relative_to(REPO)} on podman network {NETWORK} ({subnet})")
    if not quiet:
        describe(plan)
    for name, values in plan.secrets.items():
        podman.replace_secret(name, podman_secret(values))
    say(
        f"secrets: {', '.join(sorted(plan.secrets))} (podman secrets),"
        " jwt-keys and webhook-kek (files)"
    )
    start = time.monotonic()
    for stage in stages or tuple(dict.fromkeys(pod.stage for pod in plan.pods)):
        for pod in plan.stage(stage):
            say(f"{stage}: playing {pod.name} ({', '.join(c['image'] for c in pod.containers)})")
            play_pod(pod, timeout_s, plan.host_dirs)
    if receiver:
        start_receiver(images["catalytic/auth"])
    took = wait_until(
        f"gateway http://127.0.0.1:{port}/healthz", lambda: gateway_healthy(port), timeout_s
    )
    say(
        f"gateway healthy on http://127.0.0.1:{port} ({took:.1f} s); all up in "
        f"{time.monotonic() - start:.0f} s"
    )
    (STATE / "release").write_text(json.dumps({"tag": tag, "port": port}))
    return plan


def down(*, volumes: bool = False) -> list[str]:
    """Stops every pod as a kubelet would (SIGTERM, 30 s grace, then SIGKILL), reports how each
    container ended, removes the pods and secrets, and the database volume if asked. Returns
    the containers that did not stop gracefully (exit 0 within the grace period)."""
    if podman.available():
        return []
    ungraceful = []
    for name in ("gateway", "auth", "lattice", "webhook", RECEIVER, "migrate", "redis", "postgres"):
        if not podman.pod_exists(name):
            continue
        start = time.monotonic()
        podman.stop_pod(name)
        took = time.monotonic() - start
        for container in podman.pod_containers(name):
            _, code, _ = podman.container_state(container)
            graceful = code == 0 and took < 30
            if not graceful:
                ungraceful.append(container)
            # The services log both ends of their drain (services/common/server.py).
            drained = "server stopped" in podman.logs(container, tail=5)
            say(
                f"stopped {container}: exit {code} in {took:.1f} s"
                + (", drained ('server stopped')" if drained else "")
                + ("" if graceful else " (NOT graceful)")
            )
        podman.remove_pod(name)
    for name in ("database", "database-admin", "redis", "internal-token"):
        podman.remove_secret(name)
    if volumes:
        podman.remove_volume("catalytic-dev-data-postgres")
        say("removed volume catalytic-dev-data-postgres")
    (STATE / "release").unlink(missing_ok=True)
    return ungraceful


def current_release() -> dict[str, Any] | None:
    path = STATE / "release"
    return json.loads(path.read_text()) if path.exists() else None


def main_exit(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(1)
