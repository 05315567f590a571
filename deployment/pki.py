"""A small PKI for one federation, built with ``cryptography``.

``init_pki(DIR)`` creates a certificate authority and the SuperLink's TLS server
certificate; ``add_site(DIR, NAME)`` creates a hospital SuperNode's authentication key
pair. Layout of ``DIR``::

    ca.crt  ca.key                  certificate authority (ca.key never leaves the coordinator)
    superlink.crt  superlink.key    SuperLink TLS certificate and key
    sites/NAME.key  sites/NAME.pub  SuperNode authentication key pair of site NAME

SuperNode keys are what Flower 1.42 expects: EC P-384 (SECP384R1), the private key in
OpenSSH format (``flower-supernode --auth-supernode-private-key``), the public key as an
OpenSSH line ``ecdsa-sha2-nistp384 ...`` (``flwr supernode register``) — the same files
``ssh-keygen -t ecdsa -b 384`` writes. Private keys are written atomically with mode
0600; no file is overwritten unless ``force`` is true.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ConfigError, invalid_value
from common.files import atomic_path

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "superlink.crt", "superlink.key"
SITES_DIR = "sites"
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 365
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+$")
_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class PkiPaths:
    """Where the coordinator's files are."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.root / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.root / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.root / SERVER_KEY

    def site(self, name: str) -> SiteKeys:
        return SiteKeys(
            name=name,
            private_key=self.root / SITES_DIR / f"{name}.key",
            public_key=self.root / SITES_DIR / f"{name}.pub",
        )


@dataclass(frozen=True)
class SiteKeys:
    """A site's SuperNode authentication key pair."""

    name: str
    private_key: Path
    public_key: Path


def init_pki(
    root: Path,
    hosts: tuple[str, ...] = DEFAULT_HOSTS,
    days: int = DEFAULT_DAYS,
    organization: str = "fedclinic",
    force: bool = False,
) -> PkiPaths:
    """Create the CA and the SuperLink certificate (SANs = ``hosts``) under ``root``."""
    if days < 1:
        raise ConfigError(invalid_value("--days", "an integer ≥ 1", days))
    if not hosts:
        raise ConfigError(invalid_value("--host", "at least one host name or IP address", ""))
    for host in hosts:
        _general_name(host)  # refuse a malformed host before writing anything
    paths = PkiPaths(root)
    _refuse_overwrite([paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key], force)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name(f"{organization} certificate authority", organization)
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        _builder(_name(hosts[0], organization), ca_name, server_key.public_key(), now, days)
        .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )
    _write(paths.ca_key, _pem_private(ca_key), _PRIVATE_MODE)
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), _PUBLIC_MODE)
    _write(paths.server_key, _pem_private(server_key), _PRIVATE_MODE)
    _write(paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), _PUBLIC_MODE)
    return paths


def add_site(root: Path, name: str, force: bool = False) -> SiteKeys:
    """Create site ``name``'s SuperNode key pair (EC P-384, OpenSSH format)."""
    if not _SITE_NAME.match(name):
        raise ConfigError(
            invalid_value(
                "NAME", "1-63 letters, digits, '.', '_' or '-', starting alphanumeric", name
            )
        )
    keys = PkiPaths(root).site(name)
    _refuse_overwrite([keys.private_key, keys.public_key], force)
    private_key = ec.generate_private_key(ec.SECP384R1())
    private_bytes = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_bytes = private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write(keys.private_key, private_bytes, _PRIVATE_MODE)
    _write(keys.public_key, public_bytes + f" {name}\n".encode(), _PUBLIC_MODE)
    return keys


def _refuse_overwrite(targets: list[Path], force: bool) -> None:
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise ConfigError(
            f"Refusing to overwrite {', '.join(existing)}. Pass --force to replace them."
        )


def _write(target: Path, content: bytes, mode: int) -> None:
    """Write ``content`` atomically; the file has ``mode`` before any byte is written."""
    with atomic_path(target) as tmp:
        os.chmod(tmp, mode)
        tmp.write_bytes(content)


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _DNS_NAME.match(host):
        raise ConfigError(invalid_value("--host", "a DNS name or an IP address", host))
    return x509.DNSName(host)
