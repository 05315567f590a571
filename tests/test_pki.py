"""The federation's PKI: files, modes, formats Flower accepts, and no silent overwrites."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)

from cli.main import main
from common.errors import ConfigError
from deployment.pki import PkiPaths, SiteKeys, add_site, init_pki


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _pki(tmp_path: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> PkiPaths:
    return init_pki(tmp_path / "pki", hosts=hosts, days=30)


def _site(tmp_path: Path, name: str = "st-marys") -> SiteKeys:
    return add_site(tmp_path / "pki", name)


def test_init_writes_private_keys_0600_and_certificates_0644(tmp_path: Path) -> None:
    paths = _pki(tmp_path)

    modes = {p.name: _mode(p) for p in (paths.ca_key, paths.server_key)}
    cert_modes = {p.name: _mode(p) for p in (paths.ca_cert, paths.server_cert)}

    assert modes == {"ca.key": 0o600, "superlink.key": 0o600}
    assert cert_modes == {"ca.crt": 0o644, "superlink.crt": 0o644}


def test_server_certificate_is_issued_by_the_ca_for_the_hosts(tmp_path: Path) -> None:
    # Prepare
    paths = _pki(tmp_path, hosts=("superlink.example.org", "10.0.0.5", "::1"))
    ca, server = _cert(paths.ca_cert), _cert(paths.server_cert)

    # Execute
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    # Assert
    server.verify_directly_issued_by(ca)
    assert sans.get_values_for_type(x509.DNSName) == ["superlink.example.org"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=30, minutes=5)


def test_server_key_matches_its_certificate(tmp_path: Path) -> None:
    paths = _pki(tmp_path)

    key = load_pem_private_key(paths.server_key.read_bytes(), password=None)

    assert key.public_key() == _cert(paths.server_cert).public_key()


def test_site_keys_are_p384_openssh_with_private_key_0600(tmp_path: Path) -> None:
    keys = _site(tmp_path)

    private = load_ssh_private_key(keys.private_key.read_bytes(), password=None)
    public = load_ssh_public_key(keys.public_key.read_bytes())

    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    assert private.public_key() == public
    assert keys.public_key.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert keys.public_key.read_text().endswith(" st-marys\n")
    assert (_mode(keys.private_key), _mode(keys.public_key)) == (0o600, 0o644)


def test_flower_accepts_the_site_keys(tmp_path: Path) -> None:
    """Flower's own loaders: `flwr supernode register` and `flower-supernode`."""
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication

    keys = _site(tmp_path)
    args = argparse.Namespace(
        auth_supernode_private_key=str(keys.private_key), auth_supernode_public_key=None
    )

    registered = try_load_public_key(keys.public_key)
    loaded = _try_setup_client_authentication(args)

    assert loaded is not None
    assert registered.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert load_ssh_public_key(keys.public_key.read_bytes()) == loaded[1]


@pytest.mark.parametrize(
    ("create", "existing"),
    [
        (lambda root: init_pki(root), "ca.crt, ca.key, superlink.crt, superlink.key"),
        (lambda root: add_site(root, "a"), "sites/a.key, sites/a.pub"),
    ],
)
def test_nothing_is_overwritten_without_force(
    tmp_path: Path, create: Callable[[Path], object], existing: str
) -> None:
    # Prepare
    root = tmp_path / "pki"
    create(root)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    listed = ", ".join(str(root / name) for name in existing.split(", "))

    # Execute
    with pytest.raises(ConfigError) as error:
        create(root)

    # Assert
    assert str(error.value) == f"Refusing to overwrite {listed}. Pass --force to replace them."
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_force_replaces_a_site_key(tmp_path: Path) -> None:
    old = _site(tmp_path).private_key.read_bytes()

    new = add_site(tmp_path / "pki", "st-marys", force=True).private_key.read_bytes()

    assert new != old


@pytest.mark.parametrize("name", ["", "-lead", "a b", "x/y", "../up", "é", "n" * 64])
def test_site_names_are_checked(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as error:
        add_site(tmp_path, name)

    assert str(error.value) == (
        "Invalid value for `NAME`. Expected 1-63 letters, digits, '.', '_' or '-', "
        f"starting alphanumeric. Received: {name!r}"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": 0}, "Invalid value for `--days`. Expected an integer ≥ 1. Received: 0"),
        (
            {"hosts": ("localhost", "bad host!")},
            "Invalid value for `--host`. Expected a DNS name or an IP address. "
            "Received: 'bad host!'",
        ),
        (
            {"hosts": ()},
            "Invalid value for `--host`. Expected at least one host name or IP address. "
            "Received: ''",
        ),
    ],
)
def test_init_options_are_checked(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        init_pki(tmp_path, **kwargs)

    assert str(error.value) == message


def test_cli_creates_then_refuses_then_forces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    root = tmp_path / "pki"
    init = ["pki", "init", str(root), "--host", "127.0.0.1"]

    # Execute
    codes = [
        main(init),
        main(["pki", "add-site", str(root), "site-1"]),
        main(["pki", "add-site", str(root), "site-1"]),
        main(["pki", "add-site", str(root), "site-1", "--force"]),
    ]

    # Assert
    assert codes == [0, 0, 1, 0]
    keys = PkiPaths(root).site("site-1")
    assert capsys.readouterr().err == (
        f"error: Refusing to overwrite {keys.private_key}, {keys.public_key}. "
        "Pass --force to replace them.\n"
    )
