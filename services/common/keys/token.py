"""Which PKCS#11 token to use and how to log in, read once from the environment.

Shared by the webhook's KEK ring (KEK_PROVIDER=pkcs11) and auth's JWT signing keys
(JWT_KEY_PROVIDER=pkcs11), so that both read the same PKCS11_* variables the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import ConfigError, env_str


@dataclass(frozen=True)
class Pkcs11Settings:
    """PKCS11_MODULE, PKCS11_TOKEN_LABEL and the user PIN; docs/operations/configuration.md."""

    module: str
    token_label: str
    pin: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None, *, needed_by: str) -> Pkcs11Settings:
        """The settings; ConfigError naming what is missing (`needed_by` says which provider
        asked, e.g. "KEK_PROVIDER=pkcs11")."""
        pin = env_str("PKCS11_PIN", "", environ=environ)
        pin_file = env_str("PKCS11_PIN_FILE", "", environ=environ)
        if pin_file:
            try:
                pin = Path(pin_file).read_text("utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"PKCS11_PIN_FILE={pin_file}: {exc.strerror}") from None
        if not pin:
            raise ConfigError(f"{needed_by} needs PKCS11_PIN or PKCS11_PIN_FILE")
        return cls(
            module=env_str("PKCS11_MODULE", environ=environ),
            token_label=env_str("PKCS11_TOKEN_LABEL", environ=environ),
            pin=pin,
        )

    def describe(self) -> str:
        """Which token, for messages (never the PIN)."""
        return f"PKCS#11 token {self.token_label!r} ({self.module})"
