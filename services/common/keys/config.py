"""Which KEK provider to use and how to reach it, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import ConfigError, env_str
from services.common.keys.base import KekRing
from services.common.keys.token import Pkcs11Settings

PROVIDERS = ("file", "pkcs11")


@dataclass(frozen=True)
class KekConfig:
    """KEK_PROVIDER and its settings; docs/operations/configuration.md#keys."""

    provider: str = "file"
    # file: the directory of <kek id>.key files.
    directory: Path = Path(".run/kek")
    # pkcs11: the module (shared library), the token's label and the user PIN.
    module: str = ""
    token_label: str = ""
    pin: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KekConfig:
        provider = env_str("KEK_PROVIDER", "file", environ=environ)
        if provider not in PROVIDERS:
            raise ConfigError(
                f"KEK_PROVIDER must be one of {', '.join(PROVIDERS)}, got {provider!r}"
            )
        run_dir = Path(env_str("RUN_DIR", ".run", environ=environ))
        directory = Path(env_str("KEK_DIR", str(run_dir / "kek"), environ=environ))
        if provider == "file":
            return cls(provider=provider, directory=directory)
        token = Pkcs11Settings.from_env(environ, needed_by="KEK_PROVIDER=pkcs11")
        return cls(
            provider=provider,
            directory=directory,
            module=token.module,
            token_label=token.token_label,
            pin=token.pin,
        )

    def describe(self) -> str:
        """Where the KEKs are, for messages (never the PIN)."""
        if self.provider == "file":
            return f"key files in {self.directory}"
        return Pkcs11Settings(self.module, self.token_label, self.pin).describe()


def open_ring(config: KekConfig) -> KekRing:
    """The provider's ring, opened (an HSM session logged in); may be empty."""
    if config.provider == "pkcs11":
        # Imported here: the file provider (development) needs no PKCS#11 library loaded.
        from services.common.keys.hsm import Pkcs11KekRing

        return Pkcs11KekRing(config.module, config.token_label, config.pin)
    from services.common.keys.files import FileKekRing

    return FileKekRing(config.directory)
