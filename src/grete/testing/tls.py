"""Throwaway PKI for the test cluster: one CA, one broker certificate, one client certificate.

Generated fresh for every cluster so nothing secret is checked in and nothing expires
in the repository. Brokers read PEM directly (``ssl.keystore.type=PEM``, Kafka >= 2.7),
so no keytool/JKS step is needed.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TlsFiles", "generate_tls_files", "tls_paths"]


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the generated PEM files."""

    ca_file: Path
    """CA certificate: the truststore of brokers and clients."""
    broker_keystore_file: Path
    """Broker private key (unencrypted PKCS#8) followed by its certificate chain."""
    broker_cert_file: Path
    client_cert_file: Path
    """Client certificate (CN=grete-client) for mutual TLS, signed by the CA."""
    client_key_file: Path
    """Client private key, unencrypted PKCS#8."""


def tls_paths(directory: Path) -> TlsFiles:
    """Where :func:`generate_tls_files` puts its files (known before they exist)."""
    return TlsFiles(
        ca_file=directory / "ca.pem",
        broker_keystore_file=directory / "broker-keystore.pem",
        broker_cert_file=directory / "broker.pem",
        client_cert_file=directory / "client.pem",
        client_key_file=directory / "client-key.pem",
    )


def _crypto() -> Any:
    try:
        from cryptography import x509
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from .jars import HarnessSetupError

        raise HarnessSetupError(
            "the Kafka test cluster generates TLS certificates with the `cryptography` "
            "package: pip install 'grete[test]' (or pip install cryptography)"
        ) from exc
    return x509


def generate_tls_files(directory: Path, *, days: int = 7) -> TlsFiles:
    """Write a CA, a broker and a client certificate (with keys) into ``directory``."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    # Backdated a little so a client whose clock is slightly behind still accepts it.
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=days)

    def key() -> rsa.RSAPrivateKey:
        # RSA rather than EC: every JSSE and OpenSSL build accepts it in a PEM keystore.
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def name(common_name: str) -> Any:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "grete test cluster"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )

    ca_key = key()
    ca_name = name("grete test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, usages: list[Any], sans: list[Any] | None) -> tuple[Any, Any]:
        leaf_key = key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return leaf_key, builder.sign(ca_key, hashes.SHA256())

    # The broker certificate also allows clientAuth so it could serve inter-broker TLS.
    broker_key, broker_cert = leaf(
        "localhost",
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key, client_cert = leaf("grete-client", [ExtendedKeyUsageOID.CLIENT_AUTH], None)

    def key_pem(k: Any) -> bytes:
        pem: bytes = k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem

    def cert_pem(c: Any) -> bytes:
        pem: bytes = c.public_bytes(serialization.Encoding.PEM)
        return pem

    files = tls_paths(directory)
    files.ca_file.write_bytes(cert_pem(ca_cert))
    files.broker_cert_file.write_bytes(cert_pem(broker_cert))
    files.broker_keystore_file.write_bytes(
        key_pem(broker_key) + cert_pem(broker_cert) + cert_pem(ca_cert)
    )
    files.client_cert_file.write_bytes(cert_pem(client_cert))
    files.client_key_file.write_bytes(key_pem(client_key))
    for private in (files.broker_keystore_file, files.client_key_file):
        private.chmod(0o600)
    return files
