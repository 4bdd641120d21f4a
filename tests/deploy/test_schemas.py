"""Every object of every overlay is valid against the pinned Kubernetes release's schemas."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.deploy.manifests import KUBERNETES_VERSION, OVERLAYS, objects


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(overlay: str) -> None:
    errors = []
    for obj in objects(overlay):
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            # strict: a field the schema does not know is an error, not ignored.
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # The CLI only warns; a kind or API version the release lacks is an error here.
            errors.append(f"{name}: {obj.get('apiVersion')} does not exist in {KUBERNETES_VERSION}")
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {exc.message} at {'/'.join(map(str, exc.path))}")
    assert errors == []


def test_a_removed_api_version_fails() -> None:
    # PodDisruptionBudget policy/v1beta1 was removed in 1.25: the check above must catch it.
    removed = {
        "apiVersion": "policy/v1beta1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "old"},
        "spec": {"maxUnavailable": 1},
    }
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(removed, KUBERNETES_VERSION, strict=True)


def test_an_unknown_field_fails() -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "bogus": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
