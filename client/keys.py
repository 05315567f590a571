"""``fedclinic site keygen``: the hospital makes its own SuperNode key; only the public half leaves.

Writes ``DIR/NAME.key`` (the private key ``flower-supernode --auth-supernode-private-key``
reads; mode 0600, in a 0700 folder when the folder is new) and ``DIR/NAME.pub`` (the one
line to send to the coordinator, who records it with ``fedclinic pki add-site
--public-key``). Both are written atomically; nothing is replaced unless ``force``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.site_keys import (
    PRIVATE_MODE,
    PUBLIC_MODE,
    check_site_name,
    fingerprint,
    new_key_pair,
    parse_public_key,
    private_directory,
    refuse_overwrite,
    write_with_mode,
)


@dataclass(frozen=True)
class HospitalKey:
    """A hospital's SuperNode key files and what to tell the coordinator."""

    name: str
    private_key: Path
    public_key: Path
    public_line: str
    fingerprint: str


def generate_site_key(directory: Path, name: str, force: bool = False) -> HospitalKey:
    """Create site ``name``'s key pair in ``directory`` (see the module docstring)."""
    check_site_name(name)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    refuse_overwrite([private_path, public_path], force)
    private_bytes, public_bytes = new_key_pair(name)
    private_directory(directory)
    write_with_mode(private_path, private_bytes, PRIVATE_MODE)
    write_with_mode(public_path, public_bytes, PUBLIC_MODE)
    key = parse_public_key(public_bytes, "public key", str(public_path))
    return HospitalKey(
        name=name,
        private_key=private_path,
        public_key=public_path,
        public_line=public_bytes.decode().strip(),
        fingerprint=fingerprint(key),
    )
