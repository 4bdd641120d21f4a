"""The rendered dev overlay, adapted to what `podman kube play` (4.3, Debian 12) can run.

Pure: objects in, a plan out; nothing here calls podman. Every change to a manifest is named in
`Plan.adaptations`, and every object podman does not implement in `Plan.not_played`, so that
`make deploy-local` can print exactly how the pods it runs differ from what a cluster runs.

What podman 4.3 plays: Pods and Deployments (one pod per Deployment, named `<name>-pod`),
ConfigMaps in the same file, `secretKeyRef` from podman's secret store, PersistentVolumeClaims
as named volumes. What it does not: Services (no cluster DNS, no load balancing), Jobs,
StatefulSets, NetworkPolicies, PodDisruptionBudgets, HorizontalPodAutoscalers, ServiceAccounts,
gRPC probes, `secret` volumes (4.3 crashes on them). So each workload becomes one Pod named
after its Service: on a podman network with DNS the pod's name resolves like the Service's
would (`auth`, `postgres`), and the ConfigMaps' addresses work unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, Any]

# Objects podman does not implement, and what stands in for each under deploy-local.
NOT_PLAYED: Mapping[str, str] = {
    "Namespace": "podman has no namespaces; the pods share one podman network",
    "Service": "no Services: each pod is named after its Service and the network's DNS resolves it",
    "ServiceAccount": "no API server, so no service-account tokens to mount or withhold",
    "NetworkPolicy": "not enforced: every pod on the podman network reaches every other",
    "PodDisruptionBudget": "no evictions to budget for",
    "HorizontalPodAutoscaler": "no autoscaling: one replica of each",
}
# Workload kinds turned into Pods, and in which stage they start (data stores, then the
# migration, then the services, then the gateway that needs them).
STAGES = ("data-stores", "migrate", "services", "gateway")
DATA_STORES = frozenset({"postgres", "redis"})


@dataclass(frozen=True)
class PodPlan:
    """One pod to play: its manifest, and whether it runs to completion (a Job) or serves."""

    name: str
    stage: str
    manifest: Manifest
    configmaps: tuple[Manifest, ...]
    run_to_completion: bool = False

    @property
    def containers(self) -> list[Manifest]:
        spec: Manifest = self.manifest["spec"]
        return list(spec.get("containers", []))


@dataclass
class Plan:
    """What deploy-local plays, in order, and how it differs from the rendered overlay."""

    pods: list[PodPlan] = field(default_factory=list)
    # name -> key -> value: the Secrets the manifests reference (values from LocalSecrets).
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    # Host directories standing in for emptyDir volumes: (path, uid, gid), emptied on each play.
    host_dirs: list[tuple[str, int, int]] = field(default_factory=list)
    adaptations: list[str] = field(default_factory=list)
    not_played: dict[str, list[str]] = field(default_factory=dict)

    def stage(self, stage: str) -> list[PodPlan]:
        return [pod for pod in self.pods if pod.stage == stage]


@dataclass(frozen=True)
class Settings:
    """The local choices: image references, the gateway's loopback port, secret values."""

    # repository (as the manifests name it, e.g. "catalytic/auth") -> full local reference
    images: Mapping[str, str]
    gateway_port: int
    # Secret name -> key -> value
    secrets: Mapping[str, Mapping[str, str]]
    # Directory on the host holding each `secret` volume's files: <dir>/<secret name>/<key>
    secret_files_dir: str
    # Directory on the host under which emptyDir volumes become <dir>/<pod>/<volume>
    scratch_dir: str
    # Extra environment per container name (e.g. the webhook's allowed CIDRs for a local receiver)
    extra_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    volume_prefix: str = "catalytic-dev"


def image_repository(reference: str) -> str:
    """`catalytic/auth:0.1.0-dev` -> `catalytic/auth`; digests and registries with ports too."""
    without_digest = reference.split("@", 1)[0]
    name, _, tag = without_digest.rpartition(":")
    if name and "/" not in tag:
        return name
    return without_digest


def adapt(objects: Iterable[Manifest], settings: Settings) -> Plan:
    """The plan for the rendered objects; KeyError-free on any overlay shaped like ours."""
    plan = Plan()
    objects = [obj for obj in objects if obj]
    configmaps = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "ConfigMap"}
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in NOT_PLAYED:
            plan.not_played.setdefault(kind, []).append(name)
        elif kind in ("Deployment", "StatefulSet", "Job"):
            plan.pods.append(_pod(obj, settings, plan, configmaps))
        elif kind not in ("ConfigMap", "Secret"):
            plan.not_played.setdefault(kind, []).append(name)
    plan.pods.sort(key=lambda pod: (STAGES.index(pod.stage), pod.name))
    for pod in plan.pods:
        for secret_name in _secret_refs(pod.manifest):
            if secret_name not in settings.secrets:
                raise KeyError(f"pod {pod.name} references Secret {secret_name!r}: no local value")
            plan.secrets[secret_name] = dict(settings.secrets[secret_name])
    return plan


def _stage(kind: str, name: str) -> str:
    if kind == "Job":
        return "migrate"
    if name in DATA_STORES:
        return "data-stores"
    if name == "gateway":
        return "gateway"
    return "services"


def _pod(
    obj: Manifest, settings: Settings, plan: Plan, configmaps: Mapping[str, Manifest]
) -> PodPlan:
    kind, name = obj["kind"], obj["metadata"]["name"]
    template = copy.deepcopy(obj["spec"]["template"])
    spec: Manifest = template["spec"]
    # A Job's pod is named after its workload (migrate), not the release-suffixed Job name.
    pod_name = template.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/name", name)
    labels = dict(template.get("metadata", {}).get("labels", {}))
    annotations = dict(template.get("metadata", {}).get("annotations", {}))
    run_to_completion = kind == "Job"
    if kind == "Job":
        spec["restartPolicy"] = "Never"
        plan.adaptations.append(
            f"Job {name} -> pod {pod_name} run once (podman has no Jobs); deploy-local waits for "
            "it to exit 0 before starting the services"
        )
    elif kind == "StatefulSet":
        spec["restartPolicy"] = "Always"
        for claim in obj["spec"].get("volumeClaimTemplates", []):
            volume = f"{settings.volume_prefix}-{claim['metadata']['name']}-{name}"
            spec.setdefault("volumes", []).append(
                {"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": volume}}
            )
            plan.volumes.append(volume)
            plan.adaptations.append(
                f"StatefulSet {name} -> pod {pod_name} (podman has no StatefulSets); its "
                f"volumeClaimTemplate {claim['metadata']['name']} -> podman volume {volume}, "
                "kept across deploys like a PersistentVolume"
            )
    else:
        spec["restartPolicy"] = "Always"
        replicas = obj["spec"].get("replicas", 1)
        if replicas != 1:
            plan.adaptations.append(f"Deployment {name}: {replicas} replicas -> 1 pod")
    for dropped in ("topologySpreadConstraints", "affinity", "serviceAccountName"):
        spec.pop(dropped, None)
    init_containers = spec.pop("initContainers", [])
    if init_containers:
        names = ", ".join(container["name"] for container in init_containers)
        plan.adaptations.append(
            f"{pod_name}: initContainer(s) {names} left out (podman 4.3 removes a running "
            "'once' init container, and restarts an 'always' one forever); deploy-local starts "
            "the services only after the migrate pod exited 0, which is what they wait for"
        )
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        _container(pod_name, container, settings, plan)
    _secret_volumes(pod_name, spec, settings, plan)
    _empty_dirs(pod_name, spec, settings, plan)
    metadata: Manifest = {"name": pod_name, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    manifest: Manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    used = sorted(_configmap_refs(spec))
    missing = [ref for ref in used if ref not in configmaps]
    if missing:
        raise KeyError(f"pod {pod_name} references ConfigMap(s) {missing} the overlay lacks")
    return PodPlan(
        name=pod_name,
        stage=_stage(kind, pod_name),
        manifest=manifest,
        configmaps=tuple(_bare_configmap(configmaps[ref]) for ref in used),
        run_to_completion=run_to_completion,
    )


def _container(pod: str, container: Manifest, settings: Settings, plan: Plan) -> None:
    image = container["image"]
    repository = image_repository(image)
    local = settings.images.get(repository)
    if local is None:
        raise KeyError(f"container {pod}/{container['name']}: no local image for {image!r}")
    container["image"] = local
    container["imagePullPolicy"] = "Never"
    grpc_probes = [
        probe
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
        if "grpc" in container.get(probe, {})
    ]
    if grpc_probes:
        plan.adaptations.append(
            f"{pod}/{container['name']}: podman ignores gRPC probes ({', '.join(grpc_probes)}); "
            "deploy-local runs the readiness probe itself (grpc.health.v1 inside the pod)"
        )
    extra = settings.extra_env.get(container["name"], {})
    if extra:
        env = container.setdefault("env", [])
        for key, value in extra.items():
            env.append({"name": key, "value": value})
            plan.adaptations.append(f"{pod}/{container['name']}: env {key}={value} (local only)")
    _ports(pod, container, settings, plan)


def _ports(pod: str, container: Manifest, settings: Settings, plan: Plan) -> None:
    """Only the gateway's HTTP port is published, on 127.0.0.1. Podman 4.3 publishes every
    declared containerPort on 0.0.0.0 of the host (PostgreSQL with trust authentication!), so
    the others are left out: the pods reach each other over the podman network without them.
    Probes naming a port by name get its number."""
    ports = container.pop("ports", [])
    numbers = {port["name"]: port["containerPort"] for port in ports if "name" in port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        for action in ("tcpSocket", "httpGet", "grpc"):
            target = container.get(probe, {}).get(action)
            if target and isinstance(target.get("port"), str):
                target["port"] = numbers[target["port"]]
    published = []
    if pod == "gateway" and container["name"] == "gateway":
        for port in ports:
            if port.get("name") == "http" or port["containerPort"] == 8080:
                published.append(
                    {
                        "name": port.get("name", "http"),
                        "containerPort": port["containerPort"],
                        "hostPort": settings.gateway_port,
                        "hostIP": "127.0.0.1",
                    }
                )
                plan.adaptations.append(
                    f"gateway: container port {port['containerPort']} published on "
                    f"127.0.0.1:{settings.gateway_port} (the Service/Ingress a cluster would use)"
                )
    if published:
        container["ports"] = published
    hidden = [str(port["containerPort"]) for port in ports if port not in published]
    hidden = [p for p in hidden if not any(str(q["containerPort"]) == p for q in published)]
    if hidden:
        plan.adaptations.append(
            f"{pod}/{container['name']}: containerPorts {', '.join(hidden)} not declared "
            "(podman 4.3 would publish them on 0.0.0.0 of the host); reachable in the network"
        )


def _secret_volumes(pod: str, spec: Manifest, settings: Settings, plan: Plan) -> None:
    """`secret` volumes -> read-only hostPath directories (podman 4.3 crashes on the former)."""
    for volume in spec.get("volumes", []):
        secret = volume.get("secret")
        if secret is None:
            continue
        secret_name = secret["secretName"]
        del volume["secret"]
        path = f"{settings.secret_files_dir}/{secret_name}"
        volume["hostPath"] = {"path": path, "type": "Directory"}
        plan.adaptations.append(
            f"{pod}: secret volume {volume['name']} (Secret {secret_name}) -> hostPath {path} "
            "(podman 4.3 crashes on secret volumes)"
        )


def _empty_dirs(pod: str, spec: Manifest, settings: Settings, plan: Plan) -> None:
    """emptyDir volumes -> fresh host directories owned by the pod's user: podman 4.3 makes them
    root-owned and ignores fsGroup, so a non-root container could not write its /tmp."""
    context = spec.get("securityContext", {})
    uid = int(context.get("runAsUser", 0))
    gid = int(context.get("fsGroup", context.get("runAsGroup", uid)))
    for volume in spec.get("volumes", []):
        if "emptyDir" not in volume:
            continue
        del volume["emptyDir"]
        path = f"{settings.scratch_dir}/{pod}/{volume['name']}"
        volume["hostPath"] = {"path": path, "type": "Directory"}
        plan.host_dirs.append((path, uid, gid))
        plan.adaptations.append(
            f"{pod}: emptyDir {volume['name']} -> {path}, emptied on each play and owned by "
            f"{uid}:{gid} (podman 4.3 ignores fsGroup)"
        )


def _walk(node: Any) -> Iterable[Manifest]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _secret_refs(manifest: Manifest) -> set[str]:
    """Secrets read through podman's secret store (env). Secret volumes became hostPaths."""
    refs = set()
    for node in _walk(manifest):
        if "secretKeyRef" in node:
            refs.add(node["secretKeyRef"]["name"])
        if "secretRef" in node:
            refs.add(node["secretRef"]["name"])
    return refs


def _configmap_refs(spec: Manifest) -> set[str]:
    refs = set()
    for node in _walk(spec):
        if "configMapRef" in node:
            refs.add(node["configMapRef"]["name"])
        if "configMapKeyRef" in node:
            refs.add(node["configMapKeyRef"]["name"])
        if isinstance(node.get("configMap"), dict):
            refs.add(node["configMap"]["name"])
    return refs


def _bare_configmap(configmap: Manifest) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": configmap["metadata"]["name"]},
        "data": dict(configmap.get("data", {})),
    }


def podman_secret(values: Mapping[str, str]) -> bytes:
    """A Secret's data as podman 4.3's kube play reads it: JSON of key -> base64(value)."""
    import base64
    import json

    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
    return json.dumps(encoded, sort_keys=True).encode()
