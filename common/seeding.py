"""Reproducible seeds derived from the run seed, stable across processes."""

from __future__ import annotations

import zlib

import numpy as np


def derive_seed(*parts: int | str) -> int:
    """A 32-bit seed from ints and strings (strings hashed with CRC-32, not ``hash``)."""
    entropy = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
