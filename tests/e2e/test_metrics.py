"""Every service's /metrics after some traffic, against deploy/monitoring/metrics.txt: each
listed metric is there with its type and labels, nothing unlisted is, and no label names a
tenant or a lattice."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from devstack.services import SERVICES
from tests.e2e.helpers import Tenant

pytestmark = pytest.mark.e2e

METRICS_FILE = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "metrics.txt"
# Labels the exposition adds to some samples of a family, beside the family's own.
RANDOM = {"seed": 3, "low": 0.5, "high": 4.0, "blocked_fraction": 0.25}
ADDED_LABELS = frozenset({"le"})


@dataclass(frozen=True)
class Expected:
    """One line of metrics.txt."""

    name: str
    type: str
    services: frozenset[str]
    labels: frozenset[str]
    when: str

    @property
    def family(self) -> str:
        """The family name the parser reports: a counter's without its `_total`."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name


def expected_metrics() -> list[Expected]:
    found: list[Expected] = []
    for line in METRICS_FILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, kind, services, labels, *when = line.split()
        found.append(
            Expected(
                name=name,
                type=kind,
                services=frozenset(services.split(",")),
                labels=frozenset() if labels == "-" else frozenset(labels.split(",")),
                when=when[0] if when else "",
            )
        )
    return found


def test_the_list_is_well_formed() -> None:
    listed = expected_metrics()
    assert len({metric.name for metric in listed}) == len(listed)
    for metric in listed:
        assert metric.name.startswith("catalytic_"), metric
        assert metric.type in ("counter", "gauge", "histogram"), metric
        assert metric.name.endswith("_total") == (metric.type == "counter"), metric
        assert metric.services <= set(SERVICES), metric
        assert metric.when in ("", "gpu"), metric
        assert not metric.labels & {"tenant_id", "user_id", "lattice_id", "request_id"}, metric


def scrape(stack: Any, service: str) -> tuple[str, dict[str, Metric]]:
    reply = httpx.get(stack.metrics_url(service), timeout=10, trust_env=False)
    assert reply.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(reply.text)}
    return reply.text, families


def traffic(gateway: httpx.Client, tenant: Tenant) -> str:
    """Calls that reach every service with a token (DB, Redis, token checks); a lattice id."""
    lattice = gateway.post(
        "/v1/lattices",
        json={"name": "metrics", "dimensions": 2, "size": 8, "random": RANDOM},
        headers=tenant.headers,
    )
    assert lattice.status_code == 200, lattice.text
    lattice_id: str = lattice.json()["id"]
    transformed = gateway.post(
        f"/v1/lattices/{lattice_id}/transform", json={"xor": {"key": 1}}, headers=tenant.headers
    )
    assert transformed.status_code == 200, transformed.text
    assert gateway.get("/v1/webhooks", headers=tenant.headers).status_code == 200
    # Refused by the auth interceptor: an invalid token is counted as such.
    assert gateway.get("/v1/lattices", headers={"authorization": "Bearer nope"}).status_code == 401
    return lattice_id


def test_every_service_exports_exactly_the_listed_metrics(
    stack: Any, gateway: httpx.Client, tenant: Tenant
) -> None:
    lattice_id = traffic(gateway, tenant)
    listed = expected_metrics()
    for service in SERVICES:
        text, families = scrape(stack, service)
        mine = [metric for metric in listed if service in metric.services]
        for metric in mine:
            family = families.get(metric.family)
            if family is None:
                assert metric.when == "gpu", f"{service} does not export {metric.name}"
                continue
            assert family.type == metric.type, (service, metric.name, family.type)
            for sample in family.samples:
                assert set(sample.labels) - ADDED_LABELS == metric.labels, (service, sample)
        exported = {
            name
            for name in families
            # prometheus-client's `<counter or histogram>_created` timestamps parse as families
            # of their own.
            if name.startswith("catalytic_") and name.removesuffix("_created") not in families
        }
        unlisted = exported - {metric.family for metric in mine}
        assert not unlisted, f"{service} exports metrics missing from metrics.txt: {unlisted}"

        # The per-service series carry the service's own name.
        for name in ("catalytic_build_info", "catalytic_db_pool_size", "catalytic_db_up"):
            labelled = [s for s in families[name].samples if s.labels["service"] == service]
            assert labelled, (service, name)
            assert all(sample.value >= 1 for sample in labelled), (service, name)
        outcomes = {
            sample.labels["outcome"]
            for sample in families["catalytic_token_verifications"].samples
            if sample.labels["service"] == service
        }
        assert outcomes == {"verified", "cached", "expired", "invalid", "revoked", "unavailable"}
        assert tenant.tenant_id not in text
        assert lattice_id not in text


def test_the_traffic_shows_in_the_new_metrics(
    stack: Any, gateway: httpx.Client, tenant: Tenant
) -> None:
    traffic(gateway, tenant)
    _, lattice = scrape(stack, "lattice")

    def value(name: str, **labels: str) -> float:
        return sum(
            sample.value
            for sample in lattice[name].samples
            if all(sample.labels.get(key) == wanted for key, wanted in labels.items())
        )

    assert value("catalytic_db_pool_wait_seconds", service="lattice") > 0  # _count among them
    assert value("catalytic_redis_command_duration_seconds", service="lattice") > 0
    assert value("catalytic_token_verifications", service="lattice", outcome="invalid") >= 1
    assert (
        value("catalytic_token_verifications", service="lattice", outcome="verified")
        + value("catalytic_token_verifications", service="lattice", outcome="cached")
        >= 2
    )
    assert value("catalytic_lattice_compute_seconds", op="transform", device="cpu") > 0
    assert value("catalytic_lattice_pool_workers") >= 1
    assert value("catalytic_lattice_pool_max_queue") >= 1
    assert "catalytic_lattice_outbox_pending" in lattice
