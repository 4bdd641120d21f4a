"""Per-RPC request data carried through contextvars, set by the server interceptors."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from services.common.errors import Unauthenticated

# grpc.aio runs every RPC in its own asyncio task, and a task runs in a copy of the context it
# was created from, so values set by an interceptor are seen by the handler and by nothing else.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
rpc_method: ContextVar[str | None] = ContextVar("rpc_method", default=None)
tenant_id: ContextVar[str | None] = ContextVar("tenant_id", default=None)
user_id: ContextVar[str | None] = ContextVar("user_id", default=None)
role: ContextVar[str | None] = ContextVar("role", default=None)
# How Principal.auth_method names the two kinds of credentials.
AUTH_METHOD_JWT = "jwt"
AUTH_METHOD_API_KEY = "api_key"
# The RPC's grpc context (its peer and metadata), read only when something needs where the call
# came from (the audit trail): holding a reference costs nothing on calls that never ask.
call: ContextVar[Any] = ContextVar("call", default=None)
# The caller's raw `authorization` value, forwarded as-is on calls to other services.
authorization: ContextVar[str | None] = ContextVar("authorization", default=None)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: set once per RPC by the auth interceptor."""

    user_id: str
    tenant_id: str
    role: str
    auth_method: str
    # The access token's jti and expiry (epoch seconds); empty for API keys.
    token_id: str = ""
    expires_at: float = 0.0
    # The API key's id and public prefix when auth_method is "api_key"; empty for access tokens.
    api_key_id: str = ""
    api_key_prefix: str = ""


_principal: ContextVar[Principal | None] = ContextVar("principal", default=None)


def set_principal(principal: Principal) -> None:
    """Records the authenticated caller; the flat variables let log lines name the tenant."""
    _principal.set(principal)
    tenant_id.set(principal.tenant_id)
    user_id.set(principal.user_id)
    role.set(principal.role)


def current_principal() -> Principal:
    """The authenticated caller of the current RPC; Unauthenticated when there is none."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("authentication required")
    return principal


def optional_principal() -> Principal | None:
    """The authenticated caller, or None when the RPC was called without a credential (an
    RPC whose credential is optional)."""
    return _principal.get()
