"""Fetches the auth service's public keys over gRPC, for local access-token verification."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from catalytic.auth.v1 import auth_service_pb2 as auth_pb
from catalytic.auth.v1 import auth_service_pb2_grpc as auth_grpc

from services.common.access_tokens import JwksFetcher

_JWK_FIELDS = ("kty", "crv", "x", "y", "kid", "use", "alg")


def grpc_jwks_fetcher(channel: grpc.aio.Channel, *, timeout_s: float = 5.0) -> JwksFetcher:
    """A JwksFetcher calling AuthService.GetJwks on `channel`."""
    stub = auth_grpc.AuthServiceStub(channel)

    async def fetch() -> Sequence[dict[str, str]]:
        response: auth_pb.GetJwksResponse = await stub.GetJwks(
            auth_pb.GetJwksRequest(), timeout=timeout_s
        )
        return [{name: getattr(key, name) for name in _JWK_FIELDS} for key in response.keys]

    return fetch
