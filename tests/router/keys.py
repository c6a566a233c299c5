"""Key material for the auth tests: key files as a mounted Secret holds them, token signing keys."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def write_keys(folder: Path, key_id: str, primary: str, secondary: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key_id}.primary").write_text(primary)
    (folder / f"{key_id}.secondary").write_text(secondary)


def signing_key(algorithm: str = "ES256") -> tuple[bytes, bytes]:
    """(private PEM, public PEM)."""
    key = ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256" else rsa.generate_private_key(65537, 2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public
