"""Plain text for people: terminal colour codes removed."""

from __future__ import annotations

import re

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI colour escape sequences (as Ray and Flower print them)."""
    return ANSI_ESCAPE.sub("", text)
