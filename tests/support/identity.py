"""Access tokens signed like the auth service's, the verifier the services would build for
them, and the principal an interceptor would derive from one."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from services.auth.keys import KeyRing
from services.auth.tokens import TokenIssuer
from services.common.access_tokens import AccessTokenVerifier
from services.common.context import Principal

ISSUER = "catalytic-auth"
AUDIENCE = "catalytic-api"


def owner(tenant_id: str) -> Principal:
    """An owner of `tenant_id`, signed in with a token (a fresh user each call)."""
    return Principal(
        user_id=str(uuid.uuid4()), tenant_id=tenant_id, role="owner", auth_method="jwt"
    )


class Tokens:
    """Access tokens signed like the auth service's, and a verifier that trusts them."""

    def __init__(self, keys_dir: Path) -> None:
        self._keys = KeyRing.load(keys_dir)
        self._issuer = TokenIssuer(self._keys, issuer=ISSUER, audience=AUDIENCE, ttl_s=600)

    def metadata(self, tenant_id: str) -> tuple[tuple[str, str], ...]:
        """gRPC metadata carrying an owner's token for `tenant_id`."""
        token = self._issuer.issue(user_id=str(uuid.uuid4()), tenant_id=tenant_id, role="owner")
        return (("authorization", f"Bearer {token.token}"),)

    def verifier(self) -> AccessTokenVerifier:
        async def fetch() -> Sequence[dict[str, str]]:
            return self._keys.jwks()

        return AccessTokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE)
