"""A small PKI for one federation, built with ``cryptography``.

``init_pki(DIR)`` creates a certificate authority and the SuperLink's TLS server
certificate; ``add_site(DIR, NAME, public_key=FILE)`` records a hospital's SuperNode public
key, which the hospital made itself (``fedclinic site keygen``). Layout of ``DIR``::

    ca.crt                          CA certificate: give it to every site and to ``flwr``
    ca-private/ca.key               CA private key (folder 0700): move it offline
    superlink/superlink.crt|.key    what the SuperLink reads besides ca.crt (folder 0700)
    sites/NAME.pub                  site NAME's public key line
    sites.json                      the site registry: {"sites": {NAME: public key line}}
    sites/NAME.key                  only with ``generate=True`` (test set-ups)

SuperNode keys are EC P-384, OpenSSH format (:mod:`common.site_keys`). Private keys are
written atomically with mode 0600; no file is overwritten unless ``force`` is true.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ConfigError, invalid_value
from common.site_keys import (
    PRIVATE_MODE,
    PUBLIC_MODE,
    check_site_name,
    fingerprint,
    key_id,
    new_key_pair,
    parse_public_key,
    private_directory,
    public_line,
    read_site_registry,
    refuse_overwrite,
    write_with_mode,
)

CA_CERT = "ca.crt"
CA_KEY = "ca-private/ca.key"
SERVER_CERT, SERVER_KEY = "superlink/superlink.crt", "superlink/superlink.key"
SITES_DIR = "sites"
SITE_REGISTRY = "sites.json"
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 365
_DNS_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+$")


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

    @property
    def registry(self) -> Path:
        return self.root / SITE_REGISTRY

    def site(self, name: str) -> SiteKeys:
        return SiteKeys(
            name=name,
            public_key=self.root / SITES_DIR / f"{name}.pub",
            private_key=self.root / SITES_DIR / f"{name}.key",
        )


@dataclass(frozen=True)
class SiteKeys:
    """A site's SuperNode key files; ``private_key`` exists only for generated test keys."""

    name: str
    public_key: Path
    private_key: Path
    fingerprint: str = ""


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
    refuse_overwrite([paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key], force)
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
    paths.root.mkdir(parents=True, exist_ok=True)
    private_directory(paths.ca_key.parent)
    private_directory(paths.server_key.parent)
    write_with_mode(paths.ca_key, _pem_private(ca_key), PRIVATE_MODE)
    write_with_mode(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    write_with_mode(paths.server_key, _pem_private(server_key), PRIVATE_MODE)
    write_with_mode(
        paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE
    )
    return paths


def add_site(
    root: Path,
    name: str,
    public_key: Path | None = None,
    generate: bool = False,
    force: bool = False,
) -> SiteKeys:
    """Record site ``name`` from its public key file, or (``generate``) make a test key pair.

    The key goes to ``sites/NAME.pub`` and the registry ``sites.json`` (name → key line),
    which the ServerApp reads to name nodes (run-config ``site-registry``).
    """
    check_site_name(name)
    if (public_key is None) == (not generate):
        raise ConfigError(
            invalid_value(
                "--public-key",
                "the site's public key file, or --generate (test set-ups only)",
                "both" if generate else "neither",
            )
        )
    paths = PkiPaths(root)
    keys = paths.site(name)
    sites = read_site_registry(paths.registry) if paths.registry.exists() else {}
    refuse_overwrite([keys.public_key, *([keys.private_key] if generate else [])], force)
    if name in sites and not force:
        refuse_overwrite([paths.registry], force=False)
    if public_key is None:
        private_bytes, public_bytes = new_key_pair(name)
        key = parse_public_key(public_bytes, "--generate", name)
    else:
        key = parse_public_key(_read_key_file(public_key), "--public-key", str(public_key))
        private_bytes, public_bytes = b"", public_line(key, name).encode()
    if owner := next((n for n, k in sites.items() if key_id(k) == key_id(key) and n != name), None):
        raise ConfigError(
            f"The public key in {public_key} is already recorded for site `{owner}`. "
            "A key identifies one site; make a new key with `fedclinic site keygen`."
        )
    if generate:
        write_with_mode(keys.private_key, private_bytes, PRIVATE_MODE)
    else:
        keys.private_key.unlink(missing_ok=True)  # a replaced generated key must not linger
    write_with_mode(keys.public_key, public_bytes, PUBLIC_MODE)
    lines = {n: public_line(k, n).strip() for n, k in sites.items()}
    registry = {"sites": {**lines, name: public_bytes.decode().strip()}}
    write_with_mode(paths.registry, (json.dumps(registry, indent=2) + "\n").encode(), PUBLIC_MODE)
    return SiteKeys(name, keys.public_key, keys.private_key, fingerprint(key))


def _read_key_file(path: Path) -> bytes:
    if not path.is_file():
        raise ConfigError(invalid_value("--public-key", "a public key file", str(path)))
    return path.read_bytes()


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
