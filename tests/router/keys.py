"""Key material for the auth and TLS tests: key files as a mounted Secret holds them, token signing keys,
serving certificates."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


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


def self_signed(folder: Path, common_name: str) -> None:
    """A certificate for 127.0.0.1 under `common_name`, swapped in as the kubelet swaps a Secret's files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    data = folder / f"..{common_name}"
    data.mkdir(parents=True)
    (data / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (data / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    os.symlink(data.name, folder / "..data_tmp")
    os.replace(folder / "..data_tmp", folder / "..data")
    for name_ in ("tls.crt", "tls.key"):
        if not (folder / name_).is_symlink():
            os.symlink(f"..data/{name_}", folder / name_)


def served_name(port: int, host: str = "127.0.0.1") -> str:
    """The subject of the certificate served at host:port, whoever signed it."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))  # type: ignore[arg-type]
    return cert.subject.rfc4514_string()


def certificate(dns_name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None, *,
                ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """(certificate, key) naming `dns_name`, signed by `issuer` (a CA's pair), else by itself; a leaf says
    CA:FALSE and serverAuth, as cert-manager's and Pulumi's do."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer[0].subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = (builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def write_pair(folder: Path, chain: list[x509.Certificate], key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """tls.crt (the chain, leaf first) and tls.key in `folder`, replaced in one step each; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    contents = {"tls.crt": b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
                "tls.key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())}
    for name, content in contents.items():
        (folder / f"{name}.tmp").write_bytes(content)
        os.replace(folder / f"{name}.tmp", folder / name)
    return folder / "tls.crt", folder / "tls.key"
