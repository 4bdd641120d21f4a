"""ES256 signing keys: loaded from PEM files, generated when absent, published as JWKS.

Every `*.pem` file in the keys directory is a P-256 private key whose file name (without
`.pem`) is its `kid`. The last file in name order signs (generated names sort by time); the
others stay published so tokens they signed verify until they expire. Rotation: add a new
file, restart; delete the old one once the access-token lifetime has passed.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk

ALGORITHM = "ES256"


@dataclass(frozen=True)
class SigningKey:
    """One private key and the public JWK that verifies its signatures."""

    kid: str
    private_pem: str
    public_jwk: dict[str, str]


def _load(path: Path) -> SigningKey:
    pem = path.read_text("ascii")
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path} is not a P-256 (ES256) private key")
    public: dict[str, Any] = jwk.construct(pem, ALGORITHM).public_key().to_dict()
    public_jwk = {k: str(v) for k, v in public.items()}
    public_jwk.update(kid=path.stem, use="sig", alg=ALGORITHM)
    return SigningKey(kid=path.stem, private_pem=pem, public_jwk=public_jwk)


def generate_key(keys_dir: Path) -> Path:
    """Writes a new P-256 private key (mode 0600) named by the time it was made."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = keys_dir / f"es256-{stamp}-{secrets.token_hex(4)}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


class KeyRing:
    """The published keys; `signing` is the newest."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("no signing keys")
        self.keys = keys
        self.signing = keys[-1]

    @classmethod
    def load(cls, keys_dir: Path, *, generate_if_empty: bool = True) -> KeyRing:
        paths = sorted(keys_dir.glob("*.pem")) if keys_dir.is_dir() else []
        if not paths:
            if not generate_if_empty:
                raise FileNotFoundError(f"no *.pem signing keys in {keys_dir}")
            paths = [generate_key(keys_dir)]
        return cls([_load(path) for path in paths])

    def jwks(self) -> list[dict[str, str]]:
        """Public JWKs, newest first."""
        return [key.public_jwk for key in reversed(self.keys)]
