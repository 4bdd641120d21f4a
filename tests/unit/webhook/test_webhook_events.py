"""Events: ids, types and the body, serialized once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.common.errors import InvalidArgument
from services.webhook.events import (
    MAX_BODY_BYTES,
    build_event,
    disabled_event,
    event_body,
    rfc3339,
    webhook_test_event,
)

T = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_the_body_is_compact_json_in_a_fixed_order() -> None:
    body = event_body("lattice.created", T, {"b": 1.0, "a": [2.5, None, True, "ü"]})
    assert body == (
        b'{"type":"lattice.created","timestamp":"2026-01-02T03:04:05.678901Z",'
        + '"data":{"a":[2.5,null,true,"ü"],"b":1}}'.encode()
    )


def test_timestamps_are_utc_with_z() -> None:
    assert rfc3339(T.astimezone(timezone(timedelta(hours=5)))) == "2026-01-02T03:04:05.678901Z"
    assert rfc3339(datetime(2026, 1, 1)) == "2026-01-01T00:00:00.000000Z"


def test_whole_numbers_stay_whole_only_while_exact() -> None:
    data = json.loads(event_body("path.computed", T, {"n": 3.0, "big": 2.0**60, "x": -0.5}))
    assert data["data"] == {"n": 3, "big": 2.0**60, "x": -0.5}
    assert isinstance(data["data"]["big"], float)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object()])
def test_values_json_cannot_carry_are_refused(value: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        event_body("path.computed", T, {"x": value})
    assert caught.value.field == "data"


def test_the_body_is_at_most_256_kib() -> None:
    envelope = len(event_body("path.computed", T, {"x": ""}))
    fits = {"x": "a" * (MAX_BODY_BYTES - envelope)}
    assert len(event_body("path.computed", T, fits)) == MAX_BODY_BYTES
    with pytest.raises(InvalidArgument) as caught:
        event_body("path.computed", T, {"x": "a" * (MAX_BODY_BYTES - envelope + 1)})
    assert caught.value.field == "data"


def test_build_event_names_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        build_event("", "nope", T, {})
    assert [name for name, _ in caught.value.violations] == ["event_id", "event_type"]
    for event_id in ("evt_1", "0b7c2c1e-6e1a-4f0e-9a59-4d8d3d2b1f00", "a.b:c-d_e", "x" * 128):
        assert build_event(event_id, "webhook.test", T, {}).id == event_id
    for event_id in ("x" * 129, "a b", "a\nb", "é", "a/b"):
        with pytest.raises(InvalidArgument):
            build_event(event_id, "webhook.test", T, {})


def test_service_events() -> None:
    tested = webhook_test_event("w-1", T)
    assert tested.type == "webhook.test"
    assert tested.id.startswith("evt_")
    assert json.loads(tested.body)["data"]["webhook_id"] == "w-1"
    disabled = disabled_event("w-1", "https://x.example/", "the endpoint answered 410 Gone", T)
    assert json.loads(disabled.body)["data"] == {
        "webhook_id": "w-1",
        "url": "https://x.example/",
        "reason": "the endpoint answered 410 Gone",
        "disabled_at": "2026-01-02T03:04:05.678901Z",
    }
