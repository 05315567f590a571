"""The federation's PKI: files, modes, formats Flower accepts, public keys only, no overwrites."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)

from cli.main import main
from client.keys import generate_site_key
from common.errors import ConfigError
from deployment.pki import PkiPaths, SiteKeys, add_site, init_pki

EXPECTED_KEY = (
    "Invalid value for `--public-key`. Expected one OpenSSH public key line "
    "`ecdsa-sha2-nistp384 AAAA…` (EC P-384). Received: "
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _pki(tmp_path: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> PkiPaths:
    return init_pki(tmp_path / "pki", hosts=hosts, days=30)


def _generated(tmp_path: Path, name: str = "st-marys") -> SiteKeys:
    return add_site(tmp_path / "pki", name, generate=True)


def _ssh_line(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def _private_files(root: Path) -> list[str]:
    """Every file under ``root`` holding a private key, by content (not by name)."""
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes()
    )


def test_init_keeps_the_ca_key_apart_from_what_the_superlink_reads(tmp_path: Path) -> None:
    paths = _pki(tmp_path)

    files = {str(p.relative_to(paths.root)): _mode(p) for p in paths.root.rglob("*")}

    assert files == {
        "ca.crt": 0o644,
        "ca-private": 0o700,
        "ca-private/ca.key": 0o600,
        "superlink": 0o700,
        "superlink/superlink.crt": 0o644,
        "superlink/superlink.key": 0o600,
    }
    assert paths.ca_key.parent != paths.server_key.parent


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


def test_server_and_ca_keys_match_their_certificates(tmp_path: Path) -> None:
    paths = _pki(tmp_path)

    server_key = load_pem_private_key(paths.server_key.read_bytes(), password=None)
    ca_key = load_pem_private_key(paths.ca_key.read_bytes(), password=None)

    assert server_key.public_key() == _cert(paths.server_cert).public_key()
    assert ca_key.public_key() == _cert(paths.ca_cert).public_key()


def test_add_site_records_the_public_key_a_hospital_made(tmp_path: Path) -> None:
    # Prepare
    made = generate_site_key(tmp_path / "hospital", "st-marys")
    root = _pki(tmp_path).root

    # Execute
    keys = add_site(root, "st-marys", public_key=made.public_key)

    # Assert
    recorded = load_ssh_public_key(keys.public_key.read_bytes())
    assert recorded == load_ssh_private_key(made.private_key.read_bytes(), None).public_key()
    assert keys.public_key.read_text() == made.public_key.read_text()
    assert keys.fingerprint == made.fingerprint
    assert json.loads((root / "sites.json").read_text()) == {
        "sites": {"st-marys": made.public_line}
    }
    assert (_mode(keys.public_key), _mode(root / "sites.json")) == (0o644, 0o644)
    assert not keys.private_key.exists()


def test_the_coordinator_holds_no_private_site_key(tmp_path: Path) -> None:
    """`site keygen` at each hospital, `pki add-site --public-key` at the coordinator."""
    # Prepare
    root = tmp_path / "pki"
    assert main(["pki", "init", str(root)]) == 0

    # Execute
    for name in ("st-marys", "city-general"):
        hospital = tmp_path / name
        assert main(["site", "keygen", str(hospital), name]) == 0
        pub = str(hospital / f"{name}.pub")
        assert main(["pki", "add-site", str(root), name, "--public-key", pub]) == 0

    # Assert: the CA and SuperLink keys only; the sites' own folders hold theirs
    assert _private_files(root) == ["ca-private/ca.key", "superlink/superlink.key"]
    assert sorted(json.loads((root / "sites.json").read_text())["sites"]) == [
        "city-general",
        "st-marys",
    ]
    assert _private_files(tmp_path / "st-marys") == ["st-marys.key"]


def test_generate_makes_p384_openssh_keys_at_the_coordinator(tmp_path: Path) -> None:
    keys = _generated(tmp_path)

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

    made = generate_site_key(tmp_path / "hospital", "st-marys")
    _pki(tmp_path)
    keys = add_site(tmp_path / "pki", "st-marys", public_key=made.public_key)
    args = argparse.Namespace(
        auth_supernode_private_key=str(made.private_key), auth_supernode_public_key=None
    )

    registered = try_load_public_key(keys.public_key)
    loaded = _try_setup_client_authentication(args)

    assert loaded is not None
    assert registered.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert load_ssh_public_key(keys.public_key.read_bytes()) == loaded[1]


def _p256(tmp: Path) -> bytes:
    return _ssh_line(ec.generate_private_key(ec.SECP256R1()).public_key())


def _rsa(tmp: Path) -> bytes:
    return _ssh_line(rsa.generate_private_key(65537, 2048).public_key())


def _ed25519(tmp: Path) -> bytes:
    return _ssh_line(ed25519.Ed25519PrivateKey.generate().public_key())


def _private(tmp: Path) -> bytes:
    return generate_site_key(tmp / "made", "x").private_key.read_bytes()


def _two_lines(tmp: Path) -> bytes:
    line = generate_site_key(tmp / "made", "x").public_key.read_bytes()
    return line + line


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lambda tmp: b"garbage\n", "not an OpenSSH public key"),
        (lambda tmp: b"ecdsa-sha2-nistp384 AAAAnotbase64!! x\n", "not an OpenSSH public key"),
        (lambda tmp: b"", "an empty file"),
        (_two_lines, "2 lines"),
        (_p256, "an EC secp256r1 key"),
        (_rsa, "an RSA-2048 key"),
        (_ed25519, "a key of type ssh-ed25519"),
        (_private, "a private key: send and record only the .pub line"),
    ],
)
def test_add_site_refuses_anything_but_a_p384_public_key(
    tmp_path: Path, content: Callable[[Path], bytes], problem: str
) -> None:
    # Prepare
    root = _pki(tmp_path).root
    key_file = tmp_path / "sent.pub"
    key_file.write_bytes(content(tmp_path))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))

    # Execute
    with pytest.raises(ConfigError) as error:
        add_site(root, "st-marys", public_key=key_file)

    # Assert
    assert str(error.value) == f"{EXPECTED_KEY}'{key_file} ({problem})'"
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_add_site_refuses_a_missing_file_and_a_key_of_another_site(tmp_path: Path) -> None:
    # Prepare
    root = _pki(tmp_path).root
    made = generate_site_key(tmp_path / "hospital", "st-marys")
    add_site(root, "st-marys", public_key=made.public_key)

    # Execute
    with pytest.raises(ConfigError) as missing:
        add_site(root, "other", public_key=tmp_path / "nope.pub")
    with pytest.raises(ConfigError) as reused:
        add_site(root, "other", public_key=made.public_key)

    # Assert
    assert str(missing.value) == (
        "Invalid value for `--public-key`. Expected a public key file. "
        f"Received: '{tmp_path / 'nope.pub'}'"
    )
    assert str(reused.value) == (
        f"The public key in {made.public_key} is already recorded for site `st-marys`. "
        "A key identifies one site; make a new key with `fedclinic site keygen`."
    )


@pytest.mark.parametrize(
    ("kwargs", "received"), [({}, "neither"), ({"generate": True, "public_key": Path("k")}, "both")]
)
def test_add_site_needs_exactly_one_source(
    tmp_path: Path, kwargs: dict[str, Any], received: str
) -> None:
    with pytest.raises(ConfigError) as error:
        add_site(tmp_path, "a", **kwargs)

    assert str(error.value) == (
        "Invalid value for `--public-key`. Expected the site's public key file, or --generate "
        f"(test set-ups only). Received: '{received}'"
    )


def _add_public(root: Path) -> object:
    return add_site(root, "a", public_key=root.parent / "hospital" / "a.pub")


@pytest.mark.parametrize(
    ("create", "existing"),
    [
        (
            lambda root: init_pki(root),
            "ca.crt, ca-private/ca.key, superlink/superlink.crt, superlink/superlink.key",
        ),
        (lambda root: add_site(root, "a", generate=True), "sites/a.pub, sites/a.key"),
        (_add_public, "sites/a.pub"),
    ],
)
def test_nothing_is_overwritten_without_force(
    tmp_path: Path, create: Callable[[Path], object], existing: str
) -> None:
    # Prepare
    root = tmp_path / "pki"
    generate_site_key(tmp_path / "hospital", "a")
    create(root)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    listed = ", ".join(str(root / name) for name in existing.split(", "))

    # Execute
    with pytest.raises(ConfigError) as error:
        create(root)

    # Assert
    assert str(error.value) == f"Refusing to overwrite {listed}. Pass --force to replace them."
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_force_replaces_a_site_key_and_drops_a_generated_private_key(tmp_path: Path) -> None:
    # Prepare
    old = _generated(tmp_path)
    made = generate_site_key(tmp_path / "hospital", "st-marys")

    # Execute
    new = add_site(tmp_path / "pki", "st-marys", public_key=made.public_key, force=True)

    # Assert
    assert new.public_key.read_text() == made.public_key.read_text()
    assert not old.private_key.exists()
    registry = json.loads((tmp_path / "pki" / "sites.json").read_text())
    assert registry == {"sites": {"st-marys": made.public_line}}


@pytest.mark.parametrize("name", ["", "-lead", "a b", "x/y", "../up", "é", "n" * 64])
def test_site_names_are_checked(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as error:
        add_site(tmp_path, name, generate=True)

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


def test_cli_records_then_refuses_then_forces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    root = tmp_path / "pki"
    made = generate_site_key(tmp_path / "hospital", "site-1")
    add = ["pki", "add-site", str(root), "site-1", "--public-key", str(made.public_key)]

    # Execute
    codes = [
        main(["pki", "init", str(root), "--host", "127.0.0.1"]),
        main(add),
        main(add),
        main([*add, "--force"]),
    ]

    # Assert
    assert codes == [0, 0, 1, 0]
    out, err = capsys.readouterr()
    assert f"Recorded site site-1: key {made.fingerprint}" in out
    keys = PkiPaths(root).site("site-1")
    assert err == f"error: Refusing to overwrite {keys.public_key}. Pass --force to replace them.\n"


def test_cli_add_site_needs_a_public_key_or_generate(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["pki", "add-site", "pki", "site-1"])

    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "fedclinic pki add-site: error: one of the arguments --public-key --generate is required"
    )


def test_cli_init_always_names_the_loopback_addresses(tmp_path: Path) -> None:
    # Execute: the ServerApp and the perimeter's proxy reach the SuperLink on loopback
    code = main(["pki", "init", str(tmp_path / "pki"), "--host", "superlink.example.org"])

    # Assert
    assert code == 0
    server = x509.load_pem_x509_certificate(PkiPaths(tmp_path / "pki").server_cert.read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["superlink.example.org", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
