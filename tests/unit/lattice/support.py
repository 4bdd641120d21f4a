"""Test doubles for the lattice service: an in-memory store, principals and real tokens."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.auth.keys import KeyRing
from services.auth.tokens import TokenIssuer
from services.common.access_tokens import AccessTokenVerifier
from services.common.context import Principal
from services.common.paging import Cursor
from services.lattice.catalog import LatticeRecord, NewLattice
from services.lattice.fields import EncodedField

TENANT = str(uuid.uuid4())
OTHER_TENANT = str(uuid.uuid4())
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ISSUER = "catalytic-auth"
AUDIENCE = "catalytic-api"


def principal(tenant_id: str = TENANT) -> Principal:
    return Principal(
        user_id=str(uuid.uuid4()), tenant_id=tenant_id, role="owner", auth_method="jwt"
    )


@dataclass
class FakeStore:
    """LatticeStore in memory; records which steps of a creation ran."""

    plans: dict[str, str] = field(default_factory=lambda: {TENANT: "free", OTHER_TENANT: "free"})
    lattices: dict[str, tuple[str, LatticeRecord]] = field(default_factory=dict)
    fields: dict[str, EncodedField] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)

    @asynccontextmanager
    async def creation(self, tenant_id: str) -> AsyncIterator[FakeStore.Session]:
        self.steps.append("begin")
        yield FakeStore.Session(self, tenant_id)

    @dataclass
    class Session:
        store: FakeStore
        tenant_id: str

        async def lock_tenant(self) -> str | None:
            self.store.steps.append("lock")
            return self.store.plans.get(self.tenant_id)

        async def count_lattices(self) -> int:
            self.store.steps.append("count")
            return sum(1 for owner, _ in self.store.lattices.values() if owner == self.tenant_id)

        async def insert(self, lattice: NewLattice, field: EncodedField) -> LatticeRecord:
            self.store.steps.append("insert")
            created = T0 + timedelta(seconds=len(self.store.lattices))
            record = LatticeRecord(
                id=lattice.id,
                name=lattice.name,
                dimensions=lattice.shape.dimensions,
                size=lattice.shape.size,
                vertex_count=lattice.shape.vertex_count,
                edge_count=lattice.shape.edge_count,
                version=1,
                checksum=field.checksum,
                created_at=created,
                updated_at=created,
            )
            self.store.lattices[lattice.id] = (self.tenant_id, record)
            self.store.fields[lattice.id] = field
            return record

    async def get(self, tenant_id: str, lattice_id: str) -> LatticeRecord | None:
        owner, record = self.lattices.get(lattice_id, (None, None))
        return record if owner == tenant_id else None

    async def list_lattices(
        self, tenant_id: str, *, limit: int, after: Cursor | None
    ) -> list[LatticeRecord]:
        mine = sorted(
            (record for owner, record in self.lattices.values() if owner == tenant_id),
            key=lambda r: (r.created_at, r.id),
            reverse=True,
        )
        if after is not None:
            mine = [r for r in mine if (r.created_at, r.id) < (after.created_at, after.id)]
        return mine[:limit]

    async def delete(self, tenant_id: str, lattice_id: str) -> bool:
        if await self.get(tenant_id, lattice_id) is None:
            return False
        del self.lattices[lattice_id]
        return True


class Tokens:
    """Access tokens signed like the auth service's, and a verifier that trusts them."""

    def __init__(self, keys_dir: Path) -> None:
        self._keys = KeyRing.load(keys_dir)
        self._issuer = TokenIssuer(self._keys, issuer=ISSUER, audience=AUDIENCE, ttl_s=600)

    def metadata(self, tenant_id: str = TENANT) -> tuple[tuple[str, str], ...]:
        token = self._issuer.issue(user_id=str(uuid.uuid4()), tenant_id=tenant_id, role="owner")
        return (("authorization", f"Bearer {token.token}"),)

    def verifier(self) -> AccessTokenVerifier:
        async def fetch() -> Sequence[dict[str, str]]:
            return self._keys.jwks()

        return AccessTokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE)
