"""make deploy-local: the dev overlay as podman plays it (deploy/local/).

The adaptation is checked on the rendered overlay (no podman): it may change how the pods are
wired, never weaken them. The live test plays the overlay with podman and rehearses a rollback
(release N, N+1, back to N: smoke suites and canary data at each step); it skips, saying why,
where podman cannot run containers.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.local import podman
from deploy.local.adapt import NOT_PLAYED, Plan, PodPlan, Settings, adapt, podman_secret
from deploy.local.stack import git_tag
from tests.deploy.manifests import REPO, objects

Obj = dict[str, Any]
SECRETS = {
    "database": {"DATABASE_URL": "postgresql://catalytic_app@postgres:5432/catalytic"},
    "database-admin": {"DATABASE_ADMIN_URL": "postgresql://catalytic_admin@postgres/catalytic"},
    "redis": {"REDIS_URL": "redis://redis:6379/0"},
    "internal-token": {"INTERNAL_TOKEN": "x" * 48},
}
IMAGES = {
    **{
        f"catalytic/{name}": f"localhost/catalytic/{name}:abc1234"
        for name in ("auth", "lattice", "webhook", "gateway")
    },
    "postgres": "localhost/catalytic/datastores:bookworm",
    "redis": "localhost/catalytic/datastores:bookworm",
}
SETTINGS = Settings(
    images=IMAGES,
    gateway_port=18123,
    secrets=SECRETS,
    secret_files_dir="/srv/secrets",
    scratch_dir="/srv/scratch",
    extra_env={"webhook": {"WEBHOOK_ALLOW_CIDRS": "10.89.0.0/24"}},
)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return adapt(objects("dev"), SETTINGS)


def all_containers(pod: PodPlan) -> Iterator[Obj]:
    spec = pod.manifest["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def test_every_workload_becomes_one_pod_in_dependency_order(plan: Plan) -> None:
    workloads = [o for o in objects("dev") if o["kind"] in ("Deployment", "StatefulSet", "Job")]
    assert len(plan.pods) == len(workloads)
    assert [pod.stage for pod in plan.pods] == sorted(
        (pod.stage for pod in plan.pods),
        key=("data-stores", "migrate", "services", "gateway").index,
    )
    assert [pod.name for pod in plan.stage("migrate")] == ["migrate"]
    assert plan.stage("migrate")[0].run_to_completion
    assert plan.stage("migrate")[0].manifest["spec"]["restartPolicy"] == "Never"


def test_each_service_name_is_a_pod_name_so_the_configmaps_addresses_resolve(plan: Plan) -> None:
    """No Services under podman: the network's DNS resolves pod names instead, so every
    Service must have a pod of its name running the workload the Service selects."""
    pods = {pod.name: pod for pod in plan.pods}
    for service in (o for o in objects("dev") if o["kind"] == "Service"):
        name = service["metadata"]["name"]
        assert name in pods, f"Service {name} has no pod of its name"
        labels = pods[name].manifest["metadata"]["labels"]
        for key, value in service["spec"]["selector"].items():
            assert labels.get(key) == value, f"pod {name} is not what Service {name} selects"


def test_what_podman_does_not_implement_is_listed_not_dropped_silently(plan: Plan) -> None:
    rendered_kinds = {o["kind"] for o in objects("dev")}
    for kind in ("Service", "NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert kind in rendered_kinds
        assert plan.not_played[kind], kind
        assert NOT_PLAYED[kind]
    assert any("gRPC probes" in line for line in plan.adaptations)
    assert any("initContainer" in line for line in plan.adaptations)


def test_the_adaptation_never_weakens_a_pod(plan: Plan) -> None:
    """Non-root, read-only root filesystem, no capabilities, no escalation, limits: as
    rendered. And no privileged container, host network or host PID appears."""
    for pod in plan.pods:
        spec = pod.manifest["spec"]
        assert not spec.get("hostNetwork"), pod.name
        assert not spec.get("hostPID"), pod.name
        assert spec["securityContext"]["runAsNonRoot"] is True, pod.name
        for container in all_containers(pod):
            where = f"{pod.name}/{container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["limits"], where


def test_only_the_gateway_is_published_and_only_on_loopback(plan: Plan) -> None:
    """Podman 4.3 would publish every declared containerPort on 0.0.0.0 of the host."""
    published = []
    for pod in plan.pods:
        for container in all_containers(pod):
            for port in container.get("ports", []):
                published.append((pod.name, port.get("hostIP"), port.get("hostPort")))
    assert published == [("gateway", "127.0.0.1", SETTINGS.gateway_port)]


def test_probes_keep_working_without_declared_ports(plan: Plan) -> None:
    for pod in plan.pods:
        for container in all_containers(pod):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                for action in ("tcpSocket", "httpGet", "grpc"):
                    target = container.get(probe, {}).get(action)
                    if target:
                        assert isinstance(target["port"], int), f"{pod.name} {probe}"


def test_images_are_the_local_builds_and_never_pulled(plan: Plan) -> None:
    for pod in plan.pods:
        for container in all_containers(pod):
            assert container["image"] in IMAGES.values(), container["image"]
            assert container["imagePullPolicy"] == "Never"


def test_secrets_come_from_podman_or_files_never_from_the_manifest(plan: Plan) -> None:
    assert set(plan.secrets) == set(SECRETS)
    for pod in plan.pods:
        for volume in pod.manifest["spec"].get("volumes", []):
            assert "secret" not in volume, f"{pod.name}: podman 4.3 crashes on secret volumes"
            assert "emptyDir" not in volume, f"{pod.name}: podman 4.3 ignores fsGroup"
            if "hostPath" in volume:
                assert volume["hostPath"]["path"].startswith(("/srv/secrets/", "/srv/scratch/"))
    auth = next(pod for pod in plan.pods if pod.name == "auth")
    mounts = {m["name"]: m for m in auth.manifest["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["jwt-keys"]["readOnly"] is True


def test_emptydirs_belong_to_the_pods_user(plan: Plan) -> None:
    owners = {path.split("/")[3]: (uid, gid) for path, uid, gid in plan.host_dirs}
    assert owners["postgres"] == (999, 999)
    assert owners["auth"] == (10001, 10001)


def test_podman_secret_format_is_json_of_base64_values() -> None:
    data = json.loads(podman_secret({"URL": "postgresql://a@b/c", "K": "é"}))
    assert base64.b64decode(data["URL"]).decode() == "postgresql://a@b/c"
    assert base64.b64decode(data["K"]).decode() == "é"


def test_a_missing_secret_or_image_is_named() -> None:
    with pytest.raises(KeyError, match="internal-token"):
        adapt(
            objects("dev"),
            Settings(
                **{
                    **SETTINGS.__dict__,
                    "secrets": {k: v for k, v in SECRETS.items() if k != "internal-token"},
                }
            ),
        )
    images = {k: v for k, v in IMAGES.items() if k != "postgres"}
    with pytest.raises(KeyError, match="no local image for 'postgres"):
        adapt(objects("dev"), Settings(**{**SETTINGS.__dict__, "images": images}))


# ------------------------------------------------------------------------------------ live


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def podman_problem() -> str | None:
    """Why podman cannot run the pods here, or None."""
    problem = podman.available()
    if problem:
        return problem
    try:
        podman.run(
            ["run", "--rm", "--network", "none", "localhost/catalytic/base:bookworm", "true"],
            timeout=120,
        )
    except podman.PodmanError as exc:
        if "image not known" in str(exc) or "no such image" in str(exc).lower():
            return None  # the build makes it
        return f"podman cannot run a container here: {str(exc)[-300:]}"
    return None


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.e2e
@pytest.mark.timeout(1500)
def test_deploy_local_plays_the_dev_overlay_and_a_rollback_loses_nothing() -> None:
    """make images, the data-store image, then `python -m deploy.local rehearse-rollback`:
    release N played and smoke-tested, N+1 over it, back to N; canary data and a session
    survive both switches; every container stops gracefully."""
    problem = podman_problem()
    if problem:
        pytest.skip(f"podman cannot play pods on this machine: {problem}")
    built_tag = git_tag()
    for script in ("scripts/build-images.sh", "scripts/build-datastores-image.sh"):
        built = run(["bash", script], timeout=900)
        assert built.returncode == 0, (
            f"{script} failed:\n{built.stdout[-3000:]}{built.stderr[-3000:]}"
        )
    # The tag the build gave (read once: a commit during the build would change git's answer).
    tag = built_tag
    rehearsal = run(
        [
            sys.executable,
            "-m",
            "deploy.local",
            "rehearse-rollback",
            "--port",
            str(free_port()),
            "--current",
            tag,
        ],
        timeout=1200,
    )
    output = rehearsal.stdout + rehearsal.stderr
    print(output[-6000:])
    assert rehearsal.returncode == 0, f"rollback rehearsal failed:\n{output[-8000:]}"
    record = json.loads((REPO / ".run" / "deploy-local" / "rehearsal.json").read_text())
    outcomes = {step["name"]: step["outcome"] for step in record["steps"]}
    assert outcomes["N's smoke suite on schema N+1"] == "smoke passed"
    assert outcomes["read canaries A and B on N"] == "2 canaries intact"
    assert outcomes["stop (SIGTERM, 30 s grace)"] == "every container exited 0 on SIGTERM"
