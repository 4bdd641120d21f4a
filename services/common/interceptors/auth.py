"""Authentication interceptor: every RPC not listed as public needs a valid credential.

A credential is `authorization: Bearer <access token>` or `x-api-key: <API key>`, never both.
Access tokens are verified locally (signature, claims) and then checked against the Redis
denylist; API keys are verified against PostgreSQL (briefly cached) and their revocation marker.
Internal methods (service to service) take only the shared `x-internal-token` instead.
Optional methods are public, but a credential sent to them is verified like anywhere else.
What the authenticated caller may do is the permission interceptor's (permissions.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

from services.common import context as request_context
from services.common.access_tokens import (
    TOKEN_OUTCOMES,
    TOKEN_VERIFICATIONS,
    AccessTokenVerifier,
    ExpiredToken,
)
from services.common.api_keys import ApiKeyVerifier
from services.common.context import Principal
from services.common.denylist import Denylist
from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated, Unavailable
from services.common.interceptors.base import Context, RpcInterceptor
from services.common.internal_auth import METADATA_KEY, SERVICE_PRINCIPAL, InternalToken
from services.common.permissions import ALWAYS_PUBLIC_PREFIXES

BEARER = "bearer "
AUTHORIZATION = "authorization"
API_KEY = "x-api-key"
REVOKED = "credential has been revoked"


class RevokedCredential(Unauthenticated):
    """The credential is valid but was revoked (logout, key deletion): the denylist has it."""


class AuthInterceptor(RpcInterceptor):
    """Authenticates the caller and sets the Principal contextvar.

    `denylist` is what makes logout and key deletion take effect; every service passes one.
    Without it (unit tests with fakes only) revocations are not seen. Without `api_keys`,
    `x-api-key` is refused.

    `internal_methods` accept the `internal_token` and nothing else: a tenant credential there is
    PERMISSION_DENIED (it would let a tenant act for another), and the caller becomes the
    service principal (tenant_id ""). Elsewhere `x-internal-token` is no credential at all.

    Every access token presented is counted once, by outcome, under `service`
    (catalytic_token_verifications_total).
    """

    def __init__(
        self,
        verifier: AccessTokenVerifier,
        *,
        service: str,
        public_methods: Collection[str],
        denylist: Denylist | None = None,
        api_keys: ApiKeyVerifier | None = None,
        internal_methods: Collection[str] = (),
        internal_token: InternalToken | None = None,
        optional_methods: Collection[str] = (),
    ) -> None:
        self._verifier = verifier
        self._public = frozenset(public_methods)
        self._denylist = denylist
        self._api_keys = api_keys
        self._internal = frozenset(internal_methods)
        self._internal_token = internal_token
        self._optional = frozenset(optional_methods)
        # Every outcome exported from the start (0), bound once: a call costs one increment.
        self._outcomes = {
            outcome: TOKEN_VERIFICATIONS.labels(service, outcome) for outcome in TOKEN_OUTCOMES
        }

    def _is_public(self, method: str) -> bool:
        return method in self._public or method.startswith(ALWAYS_PUBLIC_PREFIXES)

    @asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[None]:
        # Raised errors reach the error interceptor (outside this one) and its status table.
        if method in self._internal:
            self._authenticate_internal(context)
        elif method in self._optional:
            await self._authenticate(context, required=False)
        elif not self._is_public(method):
            await self._authenticate(context)
        yield

    def _authenticate_internal(self, context: Context) -> None:
        tokens: list[str] = []
        for key, value in context.invocation_metadata() or ():
            if key in (AUTHORIZATION, API_KEY):
                raise PermissionDenied("this method is internal: tenant credentials are refused")
            if key == METADATA_KEY and isinstance(value, str):
                tokens.append(value)
        if len(tokens) > 1:
            raise InvalidArgument(METADATA_KEY, "send this header once")
        if not tokens:
            raise Unauthenticated(f"this method is internal: send {METADATA_KEY}")
        if self._internal_token is None or not self._internal_token.matches(tokens[0]):
            raise Unauthenticated(f"{METADATA_KEY} is not valid")
        request_context.set_principal(SERVICE_PRINCIPAL)

    async def _authenticate(self, context: Context, *, required: bool = True) -> None:
        headers: dict[str, list[str]] = {AUTHORIZATION: [], API_KEY: []}
        for key, value in context.invocation_metadata() or ():
            if key in headers and isinstance(value, str):
                headers[key].append(value)
        for name, values in headers.items():
            if len(values) > 1:
                raise InvalidArgument(name, "send this header once")
        authorization = headers[AUTHORIZATION][0] if headers[AUTHORIZATION] else ""
        api_key = headers[API_KEY][0] if headers[API_KEY] else ""
        if authorization and api_key:
            # RFC 6750 §2: one request, one way of presenting credentials.
            raise InvalidArgument(API_KEY, "send either authorization or x-api-key, not both")
        if api_key:
            await self._authenticate_api_key(api_key.strip())
        elif authorization:
            await self._authenticate_bearer(authorization)
        elif required:
            raise Unauthenticated(
                "authentication required: send authorization: Bearer <token> or x-api-key"
            )

    async def _authenticate_bearer(self, header: str) -> None:
        try:
            principal, cached = await self._verify_bearer(header)
        except ExpiredToken:
            self._outcomes["expired"].inc()
            raise
        except RevokedCredential:
            self._outcomes["revoked"].inc()
            raise
        except Unauthenticated:
            self._outcomes["invalid"].inc()
            raise
        except Unavailable:
            self._outcomes["unavailable"].inc()
            raise
        self._outcomes["cached" if cached else "verified"].inc()
        request_context.set_principal(principal)
        request_context.authorization.set(header)

    async def _verify_bearer(self, header: str) -> tuple[Principal, bool]:
        if not header.lower().startswith(BEARER):
            raise Unauthenticated("authorization must use the Bearer scheme")
        principal, cached = await self._verifier.check(header[len(BEARER) :].strip())
        if self._denylist is not None and await self._denylist.contains(principal.token_id):
            raise RevokedCredential(REVOKED)
        return principal, cached

    async def _authenticate_api_key(self, key: str) -> None:
        if self._api_keys is None:
            raise Unauthenticated("API keys are not accepted by this service")
        principal = await self._api_keys.verify(key)
        if self._denylist is not None and await self._denylist.contains_api_key(
            principal.api_key_id
        ):
            raise RevokedCredential(REVOKED)
        request_context.set_principal(principal)
