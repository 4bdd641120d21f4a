"""Refuses requests with a NUL character (U+0000) in any string field, naming each field.

Proto strings may hold U+0000 and JSON's "\\u0000" carries it through the gateway, but
PostgreSQL's text and jsonb cannot store it: unchecked, it fails deep inside a store as an
internal error. One check of every request, before its handler, covers every RPC and every
string field (nested, repeated, map keys and values, google.protobuf.Struct) instead of each
validator remembering it (ADR 45).

What to visit is worked out once per message type and cached: the singular, repeated and map
string fields, and the message fields whose types can hold a string. A request then costs one
getattr and one `in` per string field, plus a walk into the message fields it has set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.common.errors import InvalidArgument

NUL = "\x00"
NUL_REFUSED = "must not contain the NUL character (U+0000)"


@dataclass(eq=False)
class _Plan:
    """The fields of one message type that can hold a string, by kind."""

    strings: list[str] = field(default_factory=list)
    string_lists: list[str] = field(default_factory=list)
    messages: list[tuple[str, _Plan]] = field(default_factory=list)
    message_lists: list[tuple[str, _Plan]] = field(default_factory=list)
    # (field, key is a string, value plan or None for a string value or for a scalar value)
    maps: list[tuple[str, bool, _Plan | None, bool]] = field(default_factory=list)
    building: bool = True

    def empty(self) -> bool:
        # A type still being built (a recursive one, like Struct) may hold strings.
        return not (
            self.building
            or self.strings
            or self.string_lists
            or self.messages
            or self.message_lists
            or self.maps
        )


# Keyed by descriptor (the C and Python implementations have different Descriptor types).
_PLANS: dict[Any, _Plan] = {}


def _plan(descriptor: Any) -> _Plan:
    plan = _PLANS.get(descriptor)
    if plan is not None:
        return plan
    plan = _PLANS[descriptor] = _Plan()
    for fd in descriptor.fields:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            key, value = (
                fd.message_type.fields_by_name["key"],
                fd.message_type.fields_by_name["value"],
            )
            value_plan = _plan(value.message_type) if value.message_type is not None else None
            if value_plan is not None and value_plan.empty():
                value_plan = None
            value_is_string = value.type == FieldDescriptor.TYPE_STRING
            if key.type == FieldDescriptor.TYPE_STRING or value_is_string or value_plan:
                plan.maps.append(
                    (fd.name, key.type == FieldDescriptor.TYPE_STRING, value_plan, value_is_string)
                )
        elif fd.type == FieldDescriptor.TYPE_STRING:
            (plan.string_lists if _repeated(fd) else plan.strings).append(fd.name)
        elif fd.message_type is not None:
            sub = _plan(fd.message_type)
            if not sub.empty():
                (plan.message_lists if _repeated(fd) else plan.messages).append((fd.name, sub))
    plan.building = False
    return plan


def _repeated(fd: FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


def nul_fields(message: Message) -> list[str]:
    """The paths (`name`, `fill.values`, `event_types[2]`, `data.fields[key]...`) of the string
    fields in `message` that contain U+0000."""
    found: list[str] = []
    _walk(message, _plan(message.DESCRIPTOR), "", found)
    return found


def _walk(message: Any, plan: _Plan, prefix: str, found: list[str]) -> None:
    for name in plan.strings:
        if NUL in getattr(message, name):
            found.append(prefix + name)
    for name in plan.string_lists:
        for index, value in enumerate(getattr(message, name)):
            if NUL in value:
                found.append(f"{prefix}{name}[{index}]")
    for name, sub in plan.messages:
        if message.HasField(name):
            _walk(getattr(message, name), sub, f"{prefix}{name}.", found)
    for name, sub in plan.message_lists:
        for index, item in enumerate(getattr(message, name)):
            _walk(item, sub, f"{prefix}{name}[{index}].", found)
    for name, string_key, value_plan, string_value in plan.maps:
        for key, value in getattr(message, name).items():
            if string_key and NUL in key:
                found.append(prefix + name)
                continue
            path = f"{prefix}{name}[{key}]"
            if string_value and NUL in value:
                found.append(path)
            elif value_plan is not None:
                _walk(value, value_plan, path + ".", found)


def refuse_nul_characters(request: object) -> None:
    """InvalidArgument naming every string field of `request` that holds U+0000."""
    if not isinstance(request, Message):
        return
    found = nul_fields(request)
    if found:
        raise InvalidArgument.of((path, NUL_REFUSED) for path in found)
