"""KEK_PROVIDER and its settings, read from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import ConfigError
from services.common.keys.config import KekConfig

PKCS11 = {
    "KEK_PROVIDER": "pkcs11",
    "PKCS11_MODULE": "/usr/lib/softhsm/libsofthsm2.so",
    "PKCS11_TOKEN_LABEL": "catalytic",
}


def test_key_files_under_the_run_directory_by_default() -> None:
    assert KekConfig.from_env({}) == KekConfig(provider="file", directory=Path(".run/kek"))
    assert KekConfig.from_env({"RUN_DIR": "/srv/run"}).directory == Path("/srv/run/kek")
    assert KekConfig.from_env({"RUN_DIR": "/x", "KEK_DIR": "/keys"}).directory == Path("/keys")


def test_pkcs11_needs_a_pin_and_a_pin_file_wins(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PKCS11_PIN"):
        KekConfig.from_env(PKCS11)
    pin_file = tmp_path / "pin"
    pin_file.write_text("from-the-file\n")
    config = KekConfig.from_env(
        {**PKCS11, "PKCS11_PIN": "inline", "PKCS11_PIN_FILE": str(pin_file)}
    )
    assert config.pin == "from-the-file"
    assert "from-the-file" not in repr(config)
    assert "from-the-file" not in config.describe()
    with pytest.raises(ConfigError, match="PKCS11_TOKEN_LABEL"):
        KekConfig.from_env({**PKCS11, "PKCS11_PIN": "1", "PKCS11_TOKEN_LABEL": ""})


def test_an_unknown_provider_or_an_unreadable_pin_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KEK_PROVIDER"):
        KekConfig.from_env({"KEK_PROVIDER": "vault"})
    with pytest.raises(ConfigError, match="PKCS11_PIN_FILE"):
        KekConfig.from_env({**PKCS11, "PKCS11_PIN_FILE": str(tmp_path / "missing")})
