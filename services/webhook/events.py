"""Events: their types, ids and the body every attempt sends, serialized once at publication."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from services.common.errors import InvalidArgument

ALL_EVENTS = "*"
TEST_EVENT = "webhook.test"
DISABLED_EVENT = "webhook.disabled"
EVENT_TYPES = frozenset(
    {
        "lattice.created",
        "lattice.deleted",
        "lattice.transformed",
        "path.computed",
        "computation.failed",
        TEST_EVENT,
        DISABLED_EVENT,
    }
)
# The whole body: Svix and the Standard Webhooks guidance keep payloads this small, and a body
# is stored once per event and read once per attempt.
MAX_BODY_BYTES = 256 * 1024
MAX_EVENT_ID_LENGTH = 128
# Sent as the webhook-id header and signed as "{id}.{ts}.": header-safe characters only.
_EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# Doubles beyond this may not be whole numbers a JSON reader can hold exactly.
_MAX_EXACT_INTEGER = 2**53

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


@dataclass(frozen=True)
class NewEvent:
    """An event about to be stored: `body` is the exact bytes sent and signed."""

    id: str
    type: str
    body: bytes


def check_event_id(event_id: str) -> str:
    """The id, or InvalidArgument(event_id)."""
    if not _EVENT_ID.fullmatch(event_id):
        raise InvalidArgument(
            "event_id",
            f"must be 1 to {MAX_EVENT_ID_LENGTH} characters from letters, digits and _ - . :",
        )
    return event_id


def check_event_type(event_type: str) -> str:
    """The type, or InvalidArgument(event_type) naming the valid ones."""
    if event_type not in EVENT_TYPES:
        expected = ", ".join(sorted(EVENT_TYPES))
        raise InvalidArgument(
            "event_type", f"unknown event type {event_type!r}; use one of {expected}"
        )
    return event_type


def check_tenant_id(tenant_id: str) -> str:
    """The canonical UUID, or InvalidArgument(tenant_id)."""
    try:
        return str(uuid.UUID(tenant_id))
    except ValueError:
        raise InvalidArgument("tenant_id", "is not a valid tenant id") from None


def new_event_id() -> str:
    """An id for an event this service makes itself (test and disabled events)."""
    return f"evt_{uuid.uuid4().hex}"


def rfc3339(moment: datetime) -> str:
    """`2026-01-01T00:00:00.000000Z`: UTC, microseconds, Z."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _tidy(value: object) -> JsonValue:
    # Struct numbers are doubles: 3.0 is written 3, as the publisher most likely meant.
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument("data", "numbers must be finite (no NaN or infinity)")
        if value.is_integer() and abs(value) <= _MAX_EXACT_INTEGER:
            return int(value)
        return value
    if isinstance(value, Mapping):
        # Sorted: a Struct's map has no order, and the same data should make the same bytes.
        return {str(key): _tidy(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_tidy(item) for item in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    raise InvalidArgument("data", f"holds a value JSON cannot carry ({type(value).__name__})")


def event_body(event_type: str, occurred_at: datetime, data: Mapping[str, object]) -> bytes:
    """`{"type":…,"timestamp":…,"data":{…}}` as compact UTF-8 JSON; InvalidArgument(data) when
    it is over MAX_BODY_BYTES."""
    document = {"type": event_type, "timestamp": rfc3339(occurred_at), "data": _tidy(data)}
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )
    if len(body) > MAX_BODY_BYTES:
        raise InvalidArgument(
            "data", f"the event body is {len(body)} bytes; at most {MAX_BODY_BYTES} are allowed"
        )
    return body


def build_event(
    event_id: str, event_type: str, occurred_at: datetime, data: Mapping[str, object]
) -> NewEvent:
    """A checked event with its body; InvalidArgument names every field that is wrong."""
    violations: list[tuple[str, str]] = []
    for check, value in ((check_event_id, event_id), (check_event_type, event_type)):
        try:
            check(value)
        except InvalidArgument as exc:
            violations += exc.violations
    if violations:
        raise InvalidArgument.of(violations)
    return NewEvent(id=event_id, type=event_type, body=event_body(event_type, occurred_at, data))


def webhook_test_event(webhook_id: str, now: datetime) -> NewEvent:
    """The `webhook.test` event TestWebhook sends to one endpoint."""
    data = {"webhook_id": webhook_id, "message": "Test event from Catalytic Lattice Platform"}
    return NewEvent(id=new_event_id(), type=TEST_EVENT, body=event_body(TEST_EVENT, now, data))


def disabled_event(webhook_id: str, url: str, reason: str, now: datetime) -> NewEvent:
    """The `webhook.disabled` event the tenant's other endpoints get when one is disabled."""
    data = {"webhook_id": webhook_id, "url": url, "reason": reason, "disabled_at": rfc3339(now)}
    return NewEvent(
        id=new_event_id(), type=DISABLED_EVENT, body=event_body(DISABLED_EVENT, now, data)
    )
