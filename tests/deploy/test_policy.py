"""Our own rules over every rendered overlay: what a reviewer would otherwise check by eye."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from services.common.ports import GRPC_PORTS
from tests.deploy.manifests import OVERLAYS, objects

WORKLOADS = ("Deployment", "StatefulSet", "Job")
LONG_RUNNING = ("Deployment", "StatefulSet")
Obj = dict[str, Any]


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def containers(obj: Obj) -> Iterator[tuple[str, Obj, bool]]:
    """(kind/name/container, container, whether it is an initContainer) of a workload."""
    spec = pod_spec(obj)
    for key in ("initContainers", "containers"):
        for container in spec.get(key, []):
            yield (
                f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}",
                container,
                (key == "initContainers"),
            )


def workloads(overlay: str) -> list[Obj]:
    return [obj for obj in objects(overlay) if obj["kind"] in WORKLOADS]


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector matches the labels (matchLabels and matchExpressions)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(overlay: str) -> None:
    problems = []
    for obj in workloads(overlay):
        pod = pod_spec(obj)
        pod_context = pod.get("securityContext", {})
        if pod_context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{obj['metadata']['name']}: seccompProfile is not RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{obj['metadata']['name']}: the service account token is mounted")
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            problems.append(f"{obj['metadata']['name']}: shares a host namespace")
        for volume in pod.get("volumes", []):
            if "hostPath" in volume:
                problems.append(f"{obj['metadata']['name']}: hostPath volume {volume['name']}")
        for name, container, _ in containers(obj):
            context = {**pod_context, **container.get("securityContext", {})}
            if context.get("runAsNonRoot") is not True or context.get("runAsUser", 1) == 0:
                problems.append(f"{name}: may run as root")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: root filesystem is writable")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: privilege escalation allowed")
            if context.get("privileged"):
                problems.append(f"{name}: privileged")
            if context.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{name}: capabilities not all dropped")
            if context.get("capabilities", {}).get("add"):
                problems.append(f"{name}: adds capabilities")
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_limits_and_a_pinned_image(overlay: str) -> None:
    problems = []
    for obj in workloads(overlay):
        for name, container, _ in containers(obj):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(kind, {}):
                        problems.append(f"{name}: no {resource} {kind[:-1]}")
            image = container["image"]
            tag = image.rpartition("/")[2].partition("@")[0].partition(":")[2]
            if "@sha256:" not in image and tag in ("", "latest"):
                problems.append(f"{name}: image {image} is not pinned (latest)")
    assert problems == []


@pytest.mark.parametrize("overlay", ["staging", "production", "production-gpu"])
def test_staging_and_production_pull_images_by_digest(overlay: str) -> None:
    images = {c["image"] for obj in workloads(overlay) for _, c, _ in containers(obj)}
    assert images
    assert {image for image in images if "@sha256:" not in image} == set()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_long_running_container_has_probes(overlay: str) -> None:
    problems = []
    for obj in workloads(overlay):
        if obj["kind"] not in LONG_RUNNING:
            continue
        for name, container, init in containers(obj):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if not init and probe not in container:
                    problems.append(f"{name}: no {probe}")
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_use_the_native_grpc_probe_on_their_full_name(overlay: str) -> None:
    """On the ports of services/common/ports.py, which the YAML repeats: the container's, the
    Service's and the probes'."""
    by_name = {obj["metadata"]["name"]: obj for obj in workloads(overlay)}
    services = {
        obj["metadata"]["name"]: obj for obj in objects(overlay) if obj["kind"] == "Service"
    }
    for service, port in GRPC_PORTS.items():
        container = pod_spec(by_name[service])["containers"][0]
        assert port in {p["containerPort"] for p in container["ports"]}, service
        assert port in {p["port"] for p in services[service]["spec"]["ports"]}, service
        full_name = f"catalytic.{service}.v1.{service.capitalize()}Service"
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["grpc"] == {"port": port, "service": full_name}
        assert container["livenessProbe"]["grpc"] == {"port": port}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_is_covered_by_a_network_policy_and_a_pdb(overlay: str) -> None:
    everything = objects(overlay)
    policies = [obj for obj in everything if obj["kind"] == "NetworkPolicy"]
    budgets = [obj for obj in everything if obj["kind"] == "PodDisruptionBudget"]
    deployments = [obj for obj in everything if obj["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"auth", "lattice", "webhook", "gateway"}
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        name = deployment["metadata"]["name"]
        # One aimed at it, not only the namespace-wide deny: its allowed flows are written down.
        own = [
            p
            for p in policies
            if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], labels)
        ]
        assert own, f"{name}: no NetworkPolicy selects its pods"
        assert any(selects(b["spec"]["selector"], labels) for b in budgets), f"{name}: no PDB"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_traffic_is_denied_by_default(overlay: str) -> None:
    deny = [
        obj
        for obj in objects(overlay)
        if obj["kind"] == "NetworkPolicy"
        and obj["spec"]["podSelector"] == {}
        and set(obj["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not obj["spec"].get("ingress")
        and not obj["spec"].get("egress")
    ]
    assert len(deny) == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migration_job_is_named_after_the_release(overlay: str) -> None:
    (job,) = [obj for obj in objects(overlay) if obj["kind"] == "Job"]
    version = job["metadata"]["labels"]["app.kubernetes.io/version"]
    assert version not in ("", "release")
    assert job["metadata"]["name"] == f"migrate-{version}"
    # Every service waits for the schema the Job brings.
    for obj in workloads(overlay):
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] != "gateway":
            (init,) = pod_spec(obj)["initContainers"]
            assert "--wait-for-current" in init["command"]


def test_only_the_gpu_overlay_asks_for_a_gpu() -> None:
    def gpus(overlay: str) -> dict[str, Any]:
        return {
            name: c["resources"]["limits"].get("nvidia.com/gpu")
            for obj in workloads(overlay)
            for name, c, _ in containers(obj)
            if "nvidia.com/gpu" in c["resources"]["limits"]
        }

    assert gpus("production-gpu") == {"Deployment/lattice/lattice": 1}
    for overlay in ("dev", "staging", "production"):
        assert gpus(overlay) == {}
    lattice = next(o for o in workloads("production-gpu") if o["metadata"]["name"] == "lattice")
    assert pod_spec(lattice)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod_spec(lattice)["tolerations"][0]["key"] == "nvidia.com/gpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_written_in_the_repository(overlay: str) -> None:
    assert [obj["metadata"]["name"] for obj in objects(overlay) if obj["kind"] == "Secret"] == []
