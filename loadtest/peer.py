"""The one-process yardstick: a plain FastAPI + uvicorn app doing the work of an
authenticated `GET /v1/lattices/{id}`, for `python -m loadtest rest` to drive beside ours.

What it does per request is what the mesh does, minus the mesh: verify the ES256 access token
(verified tokens cached, the same verifier as the services'), check its jti in the Redis
denylist (one round trip), read the lattice's row as the application role under row-level
security (the setting and the SELECT in one round trip, as the services' tenant_statement), and
answer JSON with the same fields. One process, one event loop (uvloop and httptools:
`uvicorn[standard]`, as FastAPI is deployed), a connection pool of its own. Benchmark-only:
FastAPI and uvicorn are in the `bench` extra, never imported by the services.

Run by loadtest/rest.py as `python -m loadtest.peer --port P` with DATABASE_URL, REDIS_URL,
JWKS_URL, JWT_ISSUER and JWT_AUDIENCE set.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse, Response
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.common.access_tokens import AccessTokenVerifier
from services.common.denylist import JTI_KEY
from services.common.errors import Unauthenticated

# The lattice service's own columns and statement (services/lattice/store.py).
_READ = (
    "SELECT set_config('app.tenant_id', %s, true);"
    " SELECT id::text, name, dimensions, size, vertex_count, edge_count, version, checksum,"
    " created_at, updated_at FROM lattices WHERE id = %s"
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
POOL_SIZE = 16


def _status(code: int, message: str) -> JSONResponse:
    grpc_code = {400: 3, 401: 16, 404: 5}[code]
    return JSONResponse({"code": grpc_code, "message": message, "details": []}, status_code=code)


def create_app(
    *, database_url: str, redis_url: str, jwks_url: str, issuer: str, audience: str
) -> FastAPI:
    """The FastAPI application; its resources open and close with its lifespan."""
    state: dict[str, Any] = {}

    async def fetch_jwks() -> Sequence[dict[str, str]]:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            reply = await client.get(jwks_url)
            reply.raise_for_status()
            keys: Sequence[dict[str, str]] = reply.json()["keys"]
            return keys

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            database_url,
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            kwargs={"autocommit": True},
            open=False,
        )
        await pool.open(wait=True)
        state["pool"] = pool
        state["redis"] = aioredis.from_url(redis_url)
        state["verifier"] = AccessTokenVerifier(fetch_jwks, issuer=issuer, audience=audience)
        try:
            yield
        finally:
            await state["redis"].aclose()
            await pool.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/lattices/{lattice_id}")
    async def get_lattice(lattice_id: str, authorization: str = Header(default="")) -> Response:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _status(401, "missing bearer token")
        try:
            principal = await state["verifier"].verify(token)
        except Unauthenticated as exc:
            return _status(401, str(exc))
        if await state["redis"].exists(JTI_KEY.format(principal.token_id)):
            return _status(401, "access token revoked")
        if not _UUID.fullmatch(lattice_id):
            return _status(400, "id: is not a valid UUID")
        async with state["pool"].connection() as conn:
            cur = psycopg.AsyncClientCursor(conn, row_factory=dict_row)
            await cur.execute(_READ, (principal.tenant_id, lattice_id))
            cur.nextset()
            row = await cur.fetchone()
        if row is None:
            return _status(404, "lattice not found")
        return _lattice_json(row)

    return app


def _lattice_json(row: dict[str, Any]) -> JSONResponse:
    # As the gateway's transcoder writes a Lattice: int64 as strings, RFC 3339 times.
    return JSONResponse(
        {
            "id": row["id"],
            "name": row["name"],
            "dimensions": row["dimensions"],
            "size": row["size"],
            "vertex_count": str(row["vertex_count"]),
            "edge_count": str(row["edge_count"]),
            "version": str(row["version"]),
            "checksum": row["checksum"],
            "created_at": row["created_at"].isoformat().replace("+00:00", "Z"),
            "updated_at": row["updated_at"].isoformat().replace("+00:00", "Z"),
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.peer", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = create_app(
        database_url=os.environ["DATABASE_URL"],
        redis_url=os.environ["REDIS_URL"],
        jwks_url=os.environ["JWKS_URL"],
        issuer=os.environ.get("JWT_ISSUER", "catalytic-auth"),
        audience=os.environ.get("JWT_AUDIENCE", "catalytic-api"),
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
