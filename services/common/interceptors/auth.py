"""Authentication interceptor: every RPC not listed as public needs a valid access token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

from services.common import context as request_context
from services.common.access_tokens import AccessTokenVerifier
from services.common.errors import Unauthenticated
from services.common.interceptors.base import Context, RpcInterceptor

# Infrastructure RPCs that never carry tenant data.
ALWAYS_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
BEARER = "bearer "


class AuthInterceptor(RpcInterceptor):
    """Reads `authorization: Bearer <jwt>`, verifies it, and sets the Principal contextvar."""

    def __init__(self, verifier: AccessTokenVerifier, *, public_methods: Collection[str]) -> None:
        self._verifier = verifier
        self._public = frozenset(public_methods)

    def _is_public(self, method: str) -> bool:
        return method in self._public or method.startswith(ALWAYS_PUBLIC_PREFIXES)

    @asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[None]:
        # Raised errors reach the error interceptor (outside this one) and its status table.
        if not self._is_public(method):
            await self._authenticate(context)
        yield

    async def _authenticate(self, context: Context) -> None:
        metadata = {key: value for key, value in (context.invocation_metadata() or ())}
        header = metadata.get("authorization")
        if not isinstance(header, str) or not header:
            raise Unauthenticated("authentication required: send authorization: Bearer <token>")
        if not header.lower().startswith(BEARER):
            raise Unauthenticated("authorization must use the Bearer scheme")
        principal = await self._verifier.verify(header[len(BEARER) :].strip())
        request_context.set_principal(principal)
        request_context.authorization.set(header)
