"""Which PKCS#11 token to use and how to log in, read once from the environment.

Shared by the webhook's KEK ring (KEK_PROVIDER=pkcs11) and auth's JWT signing keys
(JWT_KEY_PROVIDER=pkcs11), so that both read the same PKCS11_* variables the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def open_session(self) -> Any:
        """A read-write session on the token, logged in as its user.

        Raises what python-pkcs11 raises (PKCS11Error, or RuntimeError/OSError when the module
        cannot be loaded); callers say which keys they wanted.
        """
        # Imported here: the file providers (development) need no PKCS#11 library loaded.
        import pkcs11
        from pkcs11.exceptions import UserAlreadyLoggedIn

        token = pkcs11.lib(self.module).get_token(token_label=self.token_label)
        try:
            return token.open(user_pin=self.pin, rw=True)
        except UserAlreadyLoggedIn:
            # The log-in belongs to the process, not to a session (PKCS#11 v2.40 §5.6): another
            # session of ours is logged in already, and a new one shares its state.
            return token.open(rw=True)
