"""Schemathesis against the OpenAPI document, through the live gateway, authenticated.

Every operation gets generated requests (`FUZZ_MAX_EXAMPLES` each: a few in `make test`, many in
`make fuzz`); no reply may be a 5xx, and every reply must match the document (status code,
content type, body schema, headers); EXCLUDED_CHECKS says which checks do not apply and why.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    unsupported_method,
)

from devstack import Stack
from gateway.render import DEFAULT_OPENAPI
from tests.e2e.helpers import register_and_login

SCHEMA = schemathesis.openapi.from_path(DEFAULT_OPENAPI)
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "5"))
EXCLUDED_CHECKS = [
    # A method no RPC binds is 404 here, as for any unknown route (gateway/README.md), not 405.
    unsupported_method,
    # The services validate more than the protos can say (lengths, required fields, ids): a
    # request valid by the document may still be a 400, and the other way round.
    positive_data_acceptance,
    negative_data_rejection,
    # Each request carries one valid credential (below); the 401 paths have tests of their own.
    ignored_auth,
]


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    with httpx.Client(base_url=stack.gateway_url, timeout=10, trust_env=False) as client:
        return register_and_login(client).access_token


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_operation_never_fails_on_the_server(
    case: schemathesis.Case, stack: Stack, token: str
) -> None:
    if case.headers:
        case.headers.pop("x-api-key", None)  # one credential: the bearer token
    reply = case.call(base_url=stack.gateway_url, headers={"authorization": f"Bearer {token}"})
    assert reply.status_code < 500, (case.method, case.formatted_path, reply.text)
    case.validate_response(reply, excluded_checks=EXCLUDED_CHECKS)
