"""Names from files and folders shown as they are spelt, not as they act: a control character
(an ESC that drives a terminal, a newline that forges a line) or a bidirectional override
(U+202E shows ``gpj.exe`` as ``exe.jpg``) is written as its escape, ``\\x1b`` or ``\\u202e``."""

from __future__ import annotations

import re

# Bidirectional embeddings, overrides, isolates and marks (Unicode's Bidi_Control characters).
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_HIDDEN = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\u2028\u2029{BIDI_CONTROLS}]")


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` with each lone surrogate written out: a byte of a file name that is not UTF-8 (as
    Python holds it) as ``\\xNN``, as the index shows such names, any other as ``\\uNNNN``. What
    SQLite, PostgreSQL and JSON refuse becomes text they take."""
    return _SURROGATE.sub(_written_out, text)


def _written_out(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with each control, line-separator and bidi character as a Python-style escape."""
    return _HIDDEN.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
