"""A hospital's SuperNode authentication key: its format, made and checked in one place.

Flower 1.42 expects EC P-384 (SECP384R1) keys: the private key in OpenSSH format
(``flower-supernode --auth-supernode-private-key``) and the public key as one OpenSSH line
``ecdsa-sha2-nistp384 AAAA… NAME`` (``flwr supernode register``) — the files
``ssh-keygen -t ecdsa -b 384 -N ""`` writes. The hospital makes the pair
(``fedclinic site keygen``); the coordinator only ever sees the public line
(``fedclinic pki add-site --public-key``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from common.errors import ConfigError, invalid_value
from common.files import atomic_path

KEY_TYPE = "ecdsa-sha2-nistp384"
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
EXPECTED_PUBLIC_KEY = f"one OpenSSH public key line `{KEY_TYPE} AAAA…` (EC P-384)"
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def check_site_name(name: str) -> str:
    """A site name is also a file name: 1-63 of ``A-Za-z0-9._-``, starting alphanumeric."""
    if not _SITE_NAME.match(name):
        raise ConfigError(
            invalid_value(
                "NAME", "1-63 letters, digits, '.', '_' or '-', starting alphanumeric", name
            )
        )
    return name


def new_key_pair(comment: str) -> tuple[bytes, bytes]:
    """A fresh P-384 key: (OpenSSH private key, ``ecdsa-sha2-nistp384 … comment\\n``)."""
    private_key = ec.generate_private_key(ec.SECP384R1())
    private_bytes = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return private_bytes, public_line(private_key.public_key(), comment).encode()


def public_line(key: ec.EllipticCurvePublicKey, comment: str) -> str:
    """The OpenSSH public key line of ``key``, ending in ``comment`` and a newline."""
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{raw.decode()} {comment}\n"


def parse_public_key(data: bytes, option: str, source: str) -> ec.EllipticCurvePublicKey:
    """Load one OpenSSH ``ecdsa-sha2-nistp384`` line; a one-line error for anything else.

    ``option`` and ``source`` name the value in the error (e.g. ``--public-key`` and the file).
    """
    text = data.decode("utf-8", errors="replace").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    problem = ""
    if "PRIVATE KEY" in text:
        problem = "a private key: send and record only the .pub line"
    elif len(lines) != 1:
        problem = "an empty file" if not lines else f"{len(lines)} lines"
    if problem:
        raise ConfigError(invalid_value(option, EXPECTED_PUBLIC_KEY, f"{source} ({problem})"))
    try:
        key = serialization.load_ssh_public_key(lines[0].encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            invalid_value(option, EXPECTED_PUBLIC_KEY, f"{source} (not an OpenSSH public key)")
        ) from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP384R1):
            return key
        kind = f"an EC {key.curve.name} key"
    elif isinstance(key, rsa.RSAPublicKey):
        kind = f"an RSA-{key.key_size} key"
    else:
        kind = f"a key of type {lines[0].split()[0]}"
    raise ConfigError(invalid_value(option, EXPECTED_PUBLIC_KEY, f"{source} ({kind})"))


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """``SHA256:…`` as ``ssh-keygen -l`` prints it: read it aloud to compare two copies."""
    blob = base64.b64decode(
        key.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).split()[1]
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    """A key's identity for comparisons: its DER SubjectPublicKeyInfo (format-independent)."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def refuse_overwrite(targets: list[Path], force: bool) -> None:
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise ConfigError(
            f"Refusing to overwrite {', '.join(existing)}. Pass --force to replace them."
        )


def write_with_mode(target: Path, content: bytes, mode: int) -> None:
    """Write ``content`` atomically; the file has ``mode`` before any byte is written."""
    with atomic_path(target) as tmp:
        os.chmod(tmp, mode)
        tmp.write_bytes(content)


def private_directory(directory: Path) -> Path:
    """Create ``directory`` (and parents) readable by its owner only; keep an existing one."""
    if not directory.exists():
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    return directory


def read_site_registry(
    path: Path, option: str = "site-registry"
) -> dict[str, ec.EllipticCurvePublicKey]:
    """The registry ``sites.json`` written by ``fedclinic pki add-site``: name → public key."""
    expected = "a sites.json written by `fedclinic pki add-site`"
    try:
        sites = json.loads(path.read_text(encoding="utf-8"))["sites"]
        if not isinstance(sites, dict):
            raise TypeError(sites)
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(invalid_value(option, expected, str(path))) from None
    return {
        str(name): parse_public_key(str(line).encode(), option, f"{path}: site {name}")
        for name, line in sites.items()
    }
