"""Keys in key files or an HSM: KEKs, envelope encryption under them, PKCS#11 token settings."""
