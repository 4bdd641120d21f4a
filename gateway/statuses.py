"""The gRPC → HTTP status table REST clients see: each code the services send, its HTTP status.

Which codes exist and which domain error raises each come from the services' one table,
`services.common.status.STATUS_CODES` (plus INTERNAL, which the error interceptor sends for any
other exception). The HTTP status is what Envoy's transcoder answers for the code
(`convert_grpc_status`, Envoy's `Grpc::Utility::grpcToHttpStatus`); tests/e2e checks it against
the live gateway. `gateway.apidocs` renders the table into docs/api/errors.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from services.common.status import STATUS_CODES

# Envoy's mapping (source/common/grpc/status.cc), for every code but OK.
ENVOY_HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# What a client should make of each code the services send: the public reading of the domain
# errors (services/common/errors.py), whose docstrings speak to the services' developers.
MEANINGS: Mapping[grpc.StatusCode, str] = {
    grpc.StatusCode.UNKNOWN: "an error the service did not classify: a bug; report it with the "
    "reply's `x-request-id`",
    grpc.StatusCode.INVALID_ARGUMENT: "the request is malformed or a value is out of range; "
    "`details` carries a `google.rpc.BadRequest` naming each field to blame. Retrying as-is "
    "fails again",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the work did not finish in the time allowed (the "
    "caller's deadline, or the route's timeout: 15 s, 120 s for paths and transforms); nothing "
    "was changed",
    grpc.StatusCode.NOT_FOUND: "no such resource **in the caller's tenant**: another tenant's "
    "resource is NOT_FOUND too, never PERMISSION_DENIED",
    grpc.StatusCode.ALREADY_EXISTS: "the resource the caller tried to create exists already",
    grpc.StatusCode.PERMISSION_DENIED: "the credential is valid but may not do this (an API key "
    "or a `member` managing API keys, a tenant's credential on an internal RPC)",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "a rate limit or a plan quota. Rate limits send "
    "`retry-after` (whole seconds) and a `google.rpc.RetryInfo` detail; quotas send neither "
    "(free something first)",
    grpc.StatusCode.FAILED_PRECONDITION: "the system is not in the state the operation needs (a "
    "disabled webhook, a transform that would overflow, logout with an API key); retrying as-is "
    "will not help",
    grpc.StatusCode.ABORTED: "a concurrency conflict (a stale `if_version`): read the resource "
    "again and retry the whole sequence",
    grpc.StatusCode.UNIMPLEMENTED: "the operation is not supported by this service",
    grpc.StatusCode.INTERNAL: "an unexpected fault; the message names only a request id, the "
    "details are in the service's log",
    grpc.StatusCode.UNAVAILABLE: "a service or its database is down for now (the gateway answers "
    "this too when it cannot reach a service); retry with backoff",
    grpc.StatusCode.UNAUTHENTICATED: "no credential, or one that is malformed, forged, expired "
    "or revoked; the reply carries `www-authenticate: Bearer`",
}


class StatusTableError(ValueError):
    """A code the services send has no HTTP status or no meaning here."""


@dataclass(frozen=True)
class StatusRow:
    """One line of the table."""

    code: grpc.StatusCode
    http_status: int
    domain_errors: tuple[str, ...]  # classes in services/common/errors.py, most specific first
    meaning: str

    @property
    def number(self) -> int:
        number: int = self.code.value[0]
        return number


def rows() -> list[StatusRow]:
    """Every code the services send, in code order."""
    raised_by: dict[grpc.StatusCode, list[str]] = {}
    for error, code in STATUS_CODES.items():
        raised_by.setdefault(code, []).append(error.__name__)
    # Any exception that is no DomainError (services/common/interceptors/errors.py).
    raised_by.setdefault(grpc.StatusCode.INTERNAL, [])
    out = []
    for code, errors in raised_by.items():
        if code not in ENVOY_HTTP_STATUS or code not in MEANINGS:
            raise StatusTableError(
                f"{code.name} is sent by the services but has no row in gateway/statuses.py"
            )
        out.append(StatusRow(code, ENVOY_HTTP_STATUS[code], tuple(errors), MEANINGS[code]))
    return sorted(out, key=lambda row: row.number)
