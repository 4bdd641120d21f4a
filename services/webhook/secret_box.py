"""Webhook signing secrets at rest: sealed per endpoint (envelope encryption, ADR 56).

A secret is sealed with its tenant's and endpoint's ids as associated data, so a sealed
secret copied to another endpoint's row does not open. Rows written before encryption (or by
the release before it) still hold plaintext; `live_secrets` prefers plaintext where a row has
it, because only that release writes plaintext over a sealed value (migration 0010's trigger
keeps the sealed columns in step with its rotations).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from services.common.keys import envelope
from services.common.keys.base import KekError, KekRing

logger = logging.getLogger("catalytic.webhook.secrets")

# Opened secrets kept in memory, so a busy endpoint costs the KEK (an HSM round trip) once.
CACHE_SIZE = 4096


def secret_context(tenant_id: str, webhook_id: str) -> bytes:
    """The associated data binding a sealed secret to its endpoint."""
    return f"catalytic/webhook-secret/{tenant_id}/{webhook_id}".encode("ascii")


class SecretBox:
    """Seals and opens endpoints' signing secrets under a KEK ring."""

    def __init__(self, ring: KekRing, *, cache_size: int = CACHE_SIZE) -> None:
        self.ring = ring
        self._cache: OrderedDict[tuple[bytes, bytes], str] = OrderedDict()
        self._cache_size = cache_size

    def seal(self, tenant_id: str, webhook_id: str, secret: str) -> bytes:
        return envelope.seal(
            self.ring, secret.encode("ascii"), secret_context(tenant_id, webhook_id)
        )

    def open(self, tenant_id: str, webhook_id: str, sealed: bytes) -> str:
        """The secret; KekError when it cannot be opened (its KEK is gone, or it was changed)."""
        key = (bytes(sealed), secret_context(tenant_id, webhook_id))
        secret = self._cache.get(key)
        if secret is not None:
            self._cache.move_to_end(key)
            return secret
        secret = envelope.unseal(self.ring, key[0], key[1]).decode("ascii")
        self._cache[key] = secret
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return secret

    def rewrap(self, tenant_id: str, webhook_id: str, sealed: bytes) -> bytes:
        """The sealed secret with its data key under the current KEK."""
        return envelope.rewrap(self.ring, bytes(sealed), secret_context(tenant_id, webhook_id))

    def live_secrets(
        self,
        tenant_id: str,
        webhook_id: str,
        *,
        current: str | None,
        current_sealed: bytes | None,
        previous: str | None = None,
        previous_sealed: bytes | None = None,
    ) -> tuple[str, ...]:
        """The secrets that sign a delivery, current first; () when the current one cannot be
        opened (the delivery then fails without being sent). `previous*` only while live."""
        first = self._one(tenant_id, webhook_id, current, current_sealed)
        if first is None:
            return ()
        second = self._one(tenant_id, webhook_id, previous, previous_sealed)
        return (first, second) if second is not None else (first,)

    def _one(
        self, tenant_id: str, webhook_id: str, plaintext: str | None, sealed: bytes | None
    ) -> str | None:
        if plaintext is not None:
            return plaintext
        if sealed is None:
            return None
        try:
            return self.open(tenant_id, webhook_id, sealed)
        except KekError as exc:
            logger.error(
                "webhook %s: its signing secret cannot be opened: %s",
                webhook_id,
                exc,
                extra={"tenant_id": tenant_id, "webhook_id": webhook_id},
            )
            return None
