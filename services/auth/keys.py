"""ES256 signing keys as PEM files (JWT_KEY_PROVIDER=file, the default): a SigningKeyRing.

Every `*.pem` file in the keys directory is a P-256 private key whose file name (without
`.pem`) is its `kid`. The last file in name order signs (generated names sort by time); the
others stay published so tokens they signed verify until they expire. Rotation: add a new
file, restart; delete the old one once the access-token lifetime has passed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from services.auth.signing import (
    COORDINATE_BYTES,
    UnknownSigningKey,
    new_kid,
    public_jwk,
)

SUFFIX = ".pem"


@dataclass(frozen=True)
class SigningKey:
    """One private key and the public JWK that verifies its signatures."""

    kid: str
    private_pem: str
    public_jwk: dict[str, str]
    private_key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)


def _load(path: Path) -> SigningKey:
    pem = path.read_text("ascii")
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path} is not a P-256 (ES256) private key")
    return SigningKey(path.stem, pem, public_jwk(path.stem, key.public_key()), key)


def _kids(keys_dir: Path) -> list[str]:
    return [path.stem for path in keys_dir.glob(f"*{SUFFIX}")] if keys_dir.is_dir() else []


def generate_key(keys_dir: Path) -> Path:
    """Writes a new P-256 private key (mode 0600) whose name sorts after every key there."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = keys_dir / f"{new_kid(_kids(keys_dir))}{SUFFIX}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


class KeyRing:
    """The keys in one directory; `signing` is the newest."""

    def __init__(self, directory: Path, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError(f"no signing keys in {directory}")
        self.directory = directory
        self.keys = keys
        self.signing = keys[-1]
        self._by_kid = {key.kid: key for key in keys}

    @classmethod
    def load(cls, keys_dir: Path, *, generate_if_empty: bool = True) -> KeyRing:
        paths = sorted(keys_dir.glob(f"*{SUFFIX}")) if keys_dir.is_dir() else []
        if not paths:
            if not generate_if_empty:
                raise FileNotFoundError(f"no *{SUFFIX} signing keys in {keys_dir}")
            paths = [generate_key(keys_dir)]
        return cls(keys_dir, [_load(path) for path in paths])

    @property
    def signing_kid(self) -> str:
        return self.signing.kid

    def kids(self) -> tuple[str, ...]:
        return tuple(key.kid for key in self.keys)

    def jwks(self) -> list[dict[str, str]]:
        """Public JWKs, newest first."""
        return [key.public_jwk for key in reversed(self.keys)]

    def sign(self, kid: str, message: bytes) -> bytes:
        key = self._by_kid.get(kid)
        if key is None:
            raise UnknownSigningKey(kid)
        r, s = decode_dss_signature(key.private_key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(COORDINATE_BYTES, "big") + s.to_bytes(COORDINATE_BYTES, "big")

    def _reload(self) -> None:
        fresh = KeyRing.load(self.directory, generate_if_empty=False)
        self.keys, self.signing, self._by_kid = fresh.keys, fresh.signing, fresh._by_kid

    def create(self) -> str:
        kid = generate_key(self.directory).stem
        self._reload()
        return kid

    def destroy(self, kid: str) -> None:
        # Only a kid found in the directory names a file: nothing outside it can be deleted.
        if kid not in self._by_kid:
            raise UnknownSigningKey(kid)
        (self.directory / f"{kid}{SUFFIX}").unlink(missing_ok=True)
        self._reload()

    def describe(self) -> str:
        return f"PEM files in {self.directory}"

    def close(self) -> None:
        """Nothing is held open."""
