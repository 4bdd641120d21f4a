"""The server interceptor chain every service uses, in its one correct order."""

from __future__ import annotations

import grpc

from services.common.interceptors.base import RpcInterceptor
from services.common.interceptors.chain import InterceptorChain
from services.common.interceptors.errors import ErrorInterceptor
from services.common.interceptors.logging import AccessLogInterceptor
from services.common.interceptors.metrics import MetricsInterceptor
from services.common.interceptors.request_context import RequestContextInterceptor
from services.common.request_strings import refuse_nul_characters

__all__ = [
    "AccessLogInterceptor",
    "ErrorInterceptor",
    "InterceptorChain",
    "MetricsInterceptor",
    "RequestContextInterceptor",
    "RpcInterceptor",
    "default_interceptors",
]


def default_interceptors(
    service_name: str,
    *,
    auth: RpcInterceptor | None = None,
    permissions: RpcInterceptor | None = None,
    rate_limit: RpcInterceptor | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The chain, outermost first: request context, access log, metrics, errors, auth,
    permissions, then rate limits; run as one InterceptorChain (one interceptor for grpc, see
    chain.py).

    Auth sits inside the error interceptor so that the Unauthenticated/PermissionDenied it
    raises go through the one status table like any other domain error, and inside logging and
    metrics so that rejected calls are logged and counted with their real code. Permissions
    need the Principal auth sets; a call they refuse costs the tenant no rate-limit token.
    Rate limits come after auth because the tenant limit needs the caller's Principal.

    Every request is then checked for NUL characters in its strings (request_strings.py):
    after auth and rate limits, like the handler's own validation, and inside the error
    interceptor, so that the refusal is INVALID_ARGUMENT naming the fields.
    """
    chain: list[RpcInterceptor] = [
        RequestContextInterceptor(),
        AccessLogInterceptor(),
        MetricsInterceptor(service_name),
        ErrorInterceptor(),
    ]
    chain.extend(extra for extra in (auth, permissions, rate_limit) if extra is not None)
    return [InterceptorChain(chain, check_request=refuse_nul_characters)]
