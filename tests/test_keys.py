"""`fedclinic site keygen`: the hospital's own SuperNode key, written safely, never clobbered."""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from cli.main import main
from client.keys import generate_site_key
from common.errors import ConfigError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_keygen_writes_a_0600_private_key_and_the_public_line(tmp_path: Path) -> None:
    # Prepare
    directory = tmp_path / "etc" / "fedclinic"

    # Execute
    key = generate_site_key(directory, "st-marys")

    # Assert
    private = load_ssh_private_key(key.private_key.read_bytes(), password=None)
    public = load_ssh_public_key(key.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    assert private.public_key() == public
    assert key.public_key.read_text() == key.public_line + "\n"
    assert key.public_line.startswith("ecdsa-sha2-nistp384 AAAA")
    assert key.public_line.endswith(" st-marys")
    assert sorted(_files(directory)) == ["st-marys.key", "st-marys.pub"]  # no temporary files
    modes = (_mode(directory), _mode(key.private_key), _mode(key.public_key))
    assert modes == (0o700, 0o600, 0o644)


def test_keygen_fingerprint_is_the_one_ssh_keygen_prints(tmp_path: Path) -> None:
    key = generate_site_key(tmp_path, "st-marys")

    blob = base64.b64decode(key.public_line.split()[1])
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")

    assert key.fingerprint == expected


def test_flower_loads_the_hospitals_key(tmp_path: Path) -> None:
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication

    key = generate_site_key(tmp_path, "st-marys")
    args = argparse.Namespace(
        auth_supernode_private_key=str(key.private_key), auth_supernode_public_key=None
    )

    loaded = _try_setup_client_authentication(args)
    registered = try_load_public_key(key.public_key)

    assert loaded is not None
    assert load_ssh_public_key(key.public_key.read_bytes()) == loaded[1]
    assert registered.startswith(b"-----BEGIN PUBLIC KEY-----")


def test_keygen_keeps_an_existing_folders_mode(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o750)

    generate_site_key(tmp_path, "st-marys")

    assert _mode(tmp_path) == 0o750


def test_keygen_never_overwrites_without_force(tmp_path: Path) -> None:
    # Prepare
    first = generate_site_key(tmp_path, "st-marys")
    before = _files(tmp_path)

    # Execute
    with pytest.raises(ConfigError) as error:
        generate_site_key(tmp_path, "st-marys")

    # Assert
    assert str(error.value) == (
        f"Refusing to overwrite {first.private_key}, {first.public_key}. "
        "Pass --force to replace them."
    )
    assert _files(tmp_path) == before


@pytest.mark.parametrize("existing", ["st-marys.key", "st-marys.pub"])
def test_keygen_refuses_when_either_file_exists(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("kept")

    with pytest.raises(ConfigError) as error:
        generate_site_key(tmp_path, "st-marys")

    assert str(error.value) == (
        f"Refusing to overwrite {tmp_path / existing}. Pass --force to replace them."
    )
    assert _files(tmp_path) == {existing: b"kept"}


def test_force_replaces_the_key_pair(tmp_path: Path) -> None:
    old = generate_site_key(tmp_path, "st-marys")

    new = generate_site_key(tmp_path, "st-marys", force=True)

    assert new.public_line != old.public_line
    assert new.public_key.read_text() == new.public_line + "\n"
    assert _mode(new.private_key) == 0o600


def test_a_failed_write_leaves_the_old_key_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the replacement's bytes never reach the disk
    generate_site_key(tmp_path, "st-marys")
    before = _files(tmp_path)

    def fail(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", fail)

    # Execute
    with pytest.raises(OSError, match="No space left on device"):
        generate_site_key(tmp_path, "st-marys", force=True)

    # Assert: the old pair, whole, and no temporary file beside it
    assert _files(tmp_path) == before


def test_keygen_checks_the_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        generate_site_key(tmp_path, "../up")

    assert str(error.value) == (
        "Invalid value for `NAME`. Expected 1-63 letters, digits, '.', '_' or '-', "
        "starting alphanumeric. Received: '../up'"
    )
    assert list(tmp_path.iterdir()) == []


def test_cli_prints_the_line_to_send_then_refuses_a_second_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    argv = ["site", "keygen", str(tmp_path / "keys"), "st-marys"]

    # Execute
    first = main(argv)
    out = capsys.readouterr().out
    second = main(argv)
    err = capsys.readouterr().err

    # Assert
    public_line = (tmp_path / "keys" / "st-marys.pub").read_text().strip()
    assert (first, second) == (0, 1)
    assert out.splitlines()[-1] == public_line
    assert "PRIVATE" not in out
    assert err == (
        f"error: Refusing to overwrite {tmp_path / 'keys' / 'st-marys.key'}, "
        f"{tmp_path / 'keys' / 'st-marys.pub'}. Pass --force to replace them.\n"
    )
