"""Log lines are single JSON objects carrying the request context."""

from __future__ import annotations

import contextvars
import json
import logging
import sys

from services.common import context as rpc_context
from services.common.interceptors.logging import access_log_level
from services.common.logs import JsonFormatter, TextFormatter, configure_logging


def _record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("catalytic.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_line_has_the_basics() -> None:
    line = JsonFormatter("auth").format(_record("hello %s", "world"))
    entry = json.loads(line)
    assert entry["message"] == "hello world"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "catalytic.test"
    assert entry["service"] == "auth"
    assert entry["ts"].endswith("+00:00")
    assert "request_id" not in entry
    assert "\n" not in line


def test_json_line_includes_request_id_when_set() -> None:
    def inside() -> str:
        rpc_context.request_id.set("req-42")
        return JsonFormatter("auth").format(_record())

    entry = json.loads(contextvars.copy_context().run(inside))
    assert entry["request_id"] == "req-42"


def test_json_line_keeps_extra_fields_and_exceptions() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = _record(code="INTERNAL", duration_ms=1.5)
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["code"], entry["duration_ms"]) == ("INTERNAL", 1.5)
    assert "ValueError: broken" in entry["exc_info"]


def test_text_format_appends_request_id() -> None:
    def inside() -> str:
        rpc_context.request_id.set("req-7")
        return TextFormatter().format(_record())

    assert contextvars.copy_context().run(inside).endswith("[request_id=req-7]")


def test_configure_logging_installs_one_handler() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("debug", "json", service="auth")
        configure_logging("info", "json", service="auth")
        ours = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
        assert len(ours) == 1
        assert root.level == logging.INFO
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_access_log_levels() -> None:
    assert access_log_level("/catalytic.auth.v1.AuthService/Login", "OK") == logging.INFO
    assert access_log_level("/grpc.health.v1.Health/Check", "OK") == logging.DEBUG
    assert access_log_level("/x.Y/Z", "NOT_FOUND") == logging.WARNING
    assert access_log_level("/x.Y/Z", "INTERNAL") == logging.ERROR
    assert access_log_level("/x.Y/Z", "UNKNOWN") == logging.ERROR
