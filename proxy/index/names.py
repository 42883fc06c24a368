"""File names as the index stores and shows them.

On Linux a name is bytes; Python hands the bytes that are not UTF-8 over as lone surrogates
(``surrogateescape``), which neither SQLite nor PostgreSQL text accepts, nor JSON. The index keeps
such a byte as the four characters ``\\xNN`` (``caf\\xe9.md``, as Python's ``backslashreplace``
shows it), and a backslash already followed by ``x`` and two hex digits as ``\\x5c``, so that no
two names on disk share a stored form and ``file_name`` gives the name on disk back. Every other
name, UTF-8 as nearly all are, is stored as it is."""

from __future__ import annotations

import re

_TO_ESCAPE = re.compile(r"\\(?=x[0-9a-fA-F]{2})|[\udc80-\udcff]")
_ESCAPED = re.compile(r"\\x([0-9a-fA-F]{2})")


def path_text(name: str) -> str:
    """A file name or relative path as the index stores and shows it: valid UTF-8 text."""
    return _TO_ESCAPE.sub(lambda m: "\\x5c" if m[0] == "\\" else f"\\x{ord(m[0]) - 0xDC00:02x}", name)


def file_name(text: str) -> str:
    """The name on disk (as ``os.fsdecode`` gives it) of a stored ``path_text``."""

    def byte(match: re.Match[str]) -> str:
        value = int(match[1], 16)
        return chr(value) if value < 0x80 else chr(0xDC00 + value)

    return _ESCAPED.sub(byte, text)
