"""Key-encryption keys (KEKs) in a key file or an HSM, and envelope encryption under them."""
