"""The auth service with its signing keys in a SoftHSM2 token (JWT_KEY_PROVIDER=pkcs11), on the
stack's PostgreSQL and Redis: log in through it, verify what the token signed with the published
JWKS alone, then rotate and retire as an operator does (the admin command line, restarts).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import jwt as pyjwt
import pytest
from catalytic.auth.v1 import auth_service_pb2 as pb
from catalytic.auth.v1 import auth_service_pb2_grpc as pb_grpc

from devstack import Stack
from services.auth.config import AuthConfig
from services.auth.server import create_server
from services.auth.signing import SigningKeyError
from services.common.access_tokens import AccessTokenVerifier
from services.common.jwks_client import grpc_jwks_fetcher
from tests.unit.common.softhsm import Token, clear_signing_keys, softhsm_token

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


def admin(token: Token, *args: str) -> str:
    """`python -m services.auth.admin ARGS` in a process of its own, as an operator runs it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "PKCS11_"))}
    done = subprocess.run(
        [sys.executable, "-m", "services.auth.admin", *args],
        cwd=REPO_ROOT,
        env={**base, **token.signing_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.asynccontextmanager
async def auth_service(
    config: AuthConfig,
) -> AsyncIterator[tuple[pb_grpc.AuthServiceAsyncStub, AccessTokenVerifier]]:
    """A started auth service, its stub, and a verifier fed by its GetJwks as lattice's is."""
    running = await create_server(config)
    await running.set_serving()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            verifier = AccessTokenVerifier(
                grpc_jwks_fetcher(channel), issuer=config.issuer, audience=config.audience
            )
            yield pb_grpc.AuthServiceStub(channel), verifier
    finally:
        await running.stop(0)


async def current_user(auth: pb_grpc.AuthServiceAsyncStub, access_token: str) -> grpc.StatusCode:
    try:
        await auth.GetCurrentUser(
            pb.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {access_token}"),)
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def check_signed_by_the_token(
    auth: pb_grpc.AuthServiceAsyncStub, verifier: AccessTokenVerifier, access_token: str
) -> str:
    """The token's kid, after verifying it as the services do and with PyJWT on the JWKS."""
    principal = await verifier.verify(access_token)
    jwks = (await auth.GetJwks(pb.GetJwksRequest())).keys
    kid = pyjwt.get_unverified_header(access_token)["kid"]
    [jwk] = [key for key in jwks if key.kid == kid]
    public = pyjwt.PyJWK({f: getattr(jwk, f) for f in ("kty", "crv", "x", "y", "kid", "alg")})
    claims = pyjwt.decode(
        access_token, public.key, algorithms=["ES256"], options={"verify_aud": False}
    )
    assert claims["sub"] == principal.user_id
    return str(kid)


async def test_log_in_rotate_and_retire_with_the_keys_in_the_token(stack: Stack) -> None:
    token = softhsm_token()
    clear_signing_keys(token)
    config = AuthConfig.from_env(
        {
            "DATABASE_URL": stack.env["DATABASE_URL"],
            "REDIS_URL": stack.env["REDIS_URL"],
            "AUTH_PORT": "0",
            "AUTH_METRICS_PORT": "0",
            # The session's other tests register from this address too (as the stack does).
            "RATE_LIMIT_MULTIPLIER": "100",
            **token.signing_env(),
        }
    )
    email = f"hsm-{uuid.uuid4().hex[:10]}@example.com"
    login = pb.LoginRequest(email=email, password=PASSWORD)
    try:
        # An empty token: auth does not start (it does not make a key itself) and says why.
        with pytest.raises(SigningKeyError, match="rotate-key"):
            await create_server(config)
        admin(token, "rotate-key")

        async with auth_service(config) as (auth, verifier):
            await auth.Register(
                pb.RegisterRequest(email=email, password=PASSWORD, tenant_name="hsm")
            )
            first = (await auth.Login(login)).access_token
            old_kid = await check_signed_by_the_token(auth, verifier, first)
            assert await current_user(auth, first) == grpc.StatusCode.OK

        assert old_kid in admin(token, "rotate-key")
        async with auth_service(config) as (auth, verifier):
            second = (await auth.Login(login)).access_token
            new_kid = await check_signed_by_the_token(auth, verifier, second)
            assert new_kid > old_kid
            assert await check_signed_by_the_token(auth, verifier, first) == old_kid
            assert await current_user(auth, first) == grpc.StatusCode.OK

        admin(token, "retire-key", old_kid)
        async with auth_service(config) as (auth, verifier):
            assert [key.kid for key in (await auth.GetJwks(pb.GetJwksRequest())).keys] == [new_kid]
            assert await current_user(auth, first) == grpc.StatusCode.UNAUTHENTICATED
            assert await current_user(auth, second) == grpc.StatusCode.OK
    finally:
        clear_signing_keys(token)
