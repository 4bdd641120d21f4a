"""The rendering side of docs/deployment/rollback-procedures.md, executed offline.

A rollback in a cluster relies on two properties of what kustomize renders: a configuration
change gives the ConfigMap a new (hashed) name and changes every pod template that uses it, so
it rolls out as a new ReplicaSet that `kubectl rollout undo` can leave (the old ReplicaSet still
names the old ConfigMap, which `kubectl apply` without --prune keeps); and pinning an image to
a digest in the overlay changes that image and nothing else. Both are checked on an overlay
derived from dev, in a temporary directory, the way an operator would write it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.manifests import K8S, kubectl, objects

Obj = dict[str, Any]
DIGEST = "sha256:" + "ab" * 32


def render_derived(tmp_path: Path, extra: str) -> list[Obj]:
    """An overlay over dev with `extra` appended to its kustomization, rendered."""
    base = os.path.relpath(K8S / "overlays" / "dev", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {base}\n{extra}"
    )
    result = subprocess.run(
        [kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def platform_refs(docs: list[Obj]) -> dict[str, set[str]]:
    """Deployment -> the platform ConfigMap names its pod template refers to."""
    refs: dict[str, set[str]] = {}
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        text = yaml.safe_dump(doc["spec"]["template"])
        names = {word.strip("'\",") for word in text.split() if word.startswith("platform-")}
        if names:
            refs[doc["metadata"]["name"]] = names
    return refs


def images(docs: list[Obj]) -> dict[str, str]:
    return {
        f"{doc['metadata']['name']}/{c['name']}": c["image"]
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
        for c in doc["spec"]["template"]["spec"]["containers"]
    }


def test_a_configuration_change_renames_the_configmap_and_rolls_every_pod_using_it(
    tmp_path: Path,
) -> None:
    before = objects("dev")
    after = render_derived(
        tmp_path,
        "configMapGenerator:\n  - name: platform\n    behavior: merge\n"
        "    literals:\n      - LOG_LEVEL=DEBUG\n",
    )
    old = {d["metadata"]["name"] for d in before if d["kind"] == "ConfigMap"}
    new = {d["metadata"]["name"] for d in after if d["kind"] == "ConfigMap"}
    (old_name,) = {name for name in old if name.startswith("platform-")}
    (new_name,) = {name for name in new if name.startswith("platform-")}
    assert old_name != new_name, "a changed ConfigMap must get a new hashed name"
    refs_before, refs_after = platform_refs(before), platform_refs(after)
    assert set(refs_before) == set(refs_after) == {"auth", "lattice", "webhook"}
    for deployment in refs_after:
        assert refs_before[deployment] == {old_name}
        assert refs_after[deployment] == {new_name}, f"{deployment} would not roll out"


def test_pinning_one_image_to_a_digest_changes_that_image_only(tmp_path: Path) -> None:
    before = images(objects("dev"))
    after = images(
        render_derived(tmp_path, f"images:\n  - name: catalytic/lattice\n    digest: {DIGEST}\n")
    )
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {"lattice/lattice"}
    assert after["lattice/lattice"] == f"catalytic/lattice@{DIGEST}"
