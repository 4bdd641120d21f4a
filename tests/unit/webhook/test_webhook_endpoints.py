"""Endpoint use cases over an in-memory store: event types, description, secrets, ids, paging."""

from __future__ import annotations

import base64
import re

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.webhook.endpoints import (
    EVENT_TYPES,
    Endpoints,
    check_description,
    new_secret,
    normalise_event_types,
)

from .support import OTHER_TENANT, PUBLIC_RESOLVER, FakeStore, principal


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def endpoints(store: FakeStore) -> Endpoints:
    return Endpoints(store, PUBLIC_RESOLVER)


URL = "https://hooks.example.com/hook"


def test_event_types_are_checked_and_deduplicated() -> None:
    assert normalise_event_types(["*"]) == ("*",)
    assert normalise_event_types(sorted(EVENT_TYPES)) == tuple(sorted(EVENT_TYPES))
    assert normalise_event_types(["lattice.created", "*", "lattice.created", "*"]) == (
        "lattice.created",
        "*",
    )


def test_unknown_event_types_are_named_by_index() -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalise_event_types(["lattice.created", "lattice.exploded", "*", "LATTICE.CREATED", ""])
    assert [name for name, _ in caught.value.violations] == [
        "event_types[1]",
        "event_types[3]",
        "event_types[4]",
    ]


@pytest.mark.parametrize("event_types", [[], ["*"] * 33])
def test_event_type_count(event_types: list[str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalise_event_types(event_types)
    assert caught.value.field == "event_types"


def test_description_length() -> None:
    assert check_description("x" * 500) == "x" * 500
    with pytest.raises(InvalidArgument) as caught:
        check_description("x" * 501)
    assert caught.value.field == "description"


def test_secret_format() -> None:
    secrets = {new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


async def test_create_returns_the_secret_once(endpoints: Endpoints, store: FakeStore) -> None:
    record, secret = await endpoints.create(
        principal(), url=URL, event_types=["lattice.created", "lattice.created"], description="d"
    )
    assert record.event_types == ("lattice.created",)
    assert record.enabled
    assert store.rows[record.id][2] == secret
    assert secret not in repr(record)


async def test_create_checks_the_destination(endpoints: Endpoints, store: FakeStore) -> None:
    for url in ("http://hooks.example.com/", "https://nowhere.example.com/", "https://10.0.0.1/"):
        with pytest.raises(InvalidArgument) as caught:
            await endpoints.create(principal(), url=url, event_types=["*"], description="")
        assert caught.value.field == "url"
    assert store.rows == {}


async def test_get_delete_and_tenancy(endpoints: Endpoints) -> None:
    record, _ = await endpoints.create(principal(), url=URL, event_types=["*"], description="")
    assert await endpoints.get(principal(), record.id) == record
    with pytest.raises(NotFound):
        await endpoints.get(principal(OTHER_TENANT), record.id)
    with pytest.raises(NotFound):
        await endpoints.delete(principal(OTHER_TENANT), record.id)
    await endpoints.delete(principal(), record.id)
    with pytest.raises(NotFound):
        await endpoints.get(principal(), record.id)
    with pytest.raises(InvalidArgument) as caught:
        await endpoints.get(principal(), "not-an-id")
    assert caught.value.field == "id"


async def test_listing_pages_newest_first(endpoints: Endpoints) -> None:
    made = [
        (await endpoints.create(principal(), url=URL, event_types=["*"], description=""))[0]
        for _ in range(5)
    ]
    first = await endpoints.list_page(principal(), page_size=2, page_token="")
    second = await endpoints.list_page(principal(), page_size=2, page_token=first.next_page_token)
    third = await endpoints.list_page(principal(), page_size=2, page_token=second.next_page_token)
    listed = first.webhooks + second.webhooks + third.webhooks
    assert [r.id for r in listed] == [r.id for r in reversed(made)]
    assert third.next_page_token == ""
    with pytest.raises(InvalidArgument) as caught:
        await endpoints.list_page(principal(), page_size=101, page_token="")
    assert caught.value.field == "page_size"
    with pytest.raises(InvalidArgument) as caught:
        await endpoints.list_page(principal(), page_size=0, page_token="garbage!")
    assert caught.value.field == "page_token"


async def test_rotation_and_enabling(store: FakeStore) -> None:
    woken: list[bool] = []
    endpoints = Endpoints(
        store, PUBLIC_RESOLVER, secret_overlap_s=90, wake=lambda: woken.append(True)
    )
    record, secret = await endpoints.create(
        principal(), url=URL, event_types=["*"], description="", ordered=True
    )
    assert record.ordered

    rotated = await endpoints.rotate_secret(principal(), record.id)
    assert rotated.secret != secret
    assert rotated.secret.startswith("whsec_")
    assert rotated.previous_expires_at is not None
    assert "whsec_" not in repr(rotated)
    store.disable(record.id, "the endpoint answered 410 Gone")
    enabled = await endpoints.enable(principal(), record.id)
    assert (enabled.enabled, enabled.disabled_reason) == (True, "")
    assert woken == [True], "enabling wakes the worker: paused deliveries are due"
    for call in (endpoints.rotate_secret, endpoints.enable):
        with pytest.raises(NotFound):
            await call(principal(OTHER_TENANT), record.id)
