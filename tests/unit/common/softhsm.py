"""One SoftHSM2 token per test process, for the PKCS#11 tests.

A PKCS#11 library reads its configuration once, when first loaded into a process, and sees
only the tokens that existed then; so every test of this process shares one token, created in
a temporary directory (through SOFTHSM2_CONF) before anything loads the library. Tests remove
the KEKs (`clear_keks`) and JWT signing keys (`clear_signing_keys`) they made. `make test`
installs SoftHSM2 (scripts/install-system-deps.sh).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.keys.hsm import Pkcs11KekRing
from services.common.keys.token import Pkcs11Settings

# Debian's libsofthsm2 installs the module in both places (one a link to the other).
MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)
LABEL = "catalytic-test"
PIN = "8264-test-pin"
SO_PIN = "9351-test-so-pin"


@dataclass(frozen=True)
class Token:
    """The initialised token and the settings that reach it."""

    module: str
    label: str
    pin: str
    conf: Path

    def env(self) -> dict[str, str]:
        """What a service or the admin command line needs to use this token for its KEKs."""
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "KEK_PROVIDER": "pkcs11",
            "PKCS11_MODULE": self.module,
            "PKCS11_TOKEN_LABEL": self.label,
            "PKCS11_PIN": self.pin,
        }

    def signing_env(self) -> dict[str, str]:
        """What the auth service or its admin command line needs for JWT signing keys here."""
        env = self.env()
        del env["KEK_PROVIDER"]
        return {**env, "JWT_KEY_PROVIDER": "pkcs11"}

    def settings(self) -> Pkcs11Settings:
        return Pkcs11Settings(self.module, self.label, self.pin)

    def ring(self) -> Pkcs11KekRing:
        return Pkcs11KekRing(self.module, self.label, self.pin)


@functools.cache
def _token() -> Token | str:
    module = next((path for path in MODULES if Path(path).is_file()), None)
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        return "SoftHSM2 is not installed (apt-get install softhsm2; make system-deps does)"
    root = Path(tempfile.mkdtemp(prefix="catalytic-softhsm-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [util, "--init-token", "--free", "--label", LABEL, "--so-pin", SO_PIN, "--pin", PIN],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    return Token(module, LABEL, PIN, conf)


def softhsm_token() -> Token:
    """The process's token; skips the test, saying why, where SoftHSM2 is missing."""
    token = _token()
    if isinstance(token, str):
        pytest.skip(token)
    return token


def clear_keks(token: Token) -> None:
    """Destroys every KEK on the token, so that the next test starts with an empty ring."""
    ring = token.ring()
    try:
        for kek_id in ring.ids():
            ring.destroy(kek_id)
    finally:
        ring.close()


def clear_signing_keys(token: Token) -> None:
    """Destroys every JWT signing key object on the token (auth's ring starts empty), also the
    halves of a pair a test broke on purpose."""
    from pkcs11 import Attribute, KeyType

    session = token.settings().open_session()
    try:
        for key in list(session.get_objects({Attribute.KEY_TYPE: KeyType.EC})):
            if (key.label or "").startswith("es256-"):
                key.destroy()
    finally:
        session.close()
