"""Plain text and source code."""

from __future__ import annotations

import codecs
from collections.abc import Callable
from pathlib import Path

import charset_normalizer

from proxy.hookspecs import hookimpl
from proxy.types import Document, SkipFile

SUFFIXES = (
    "",
    ".txt",
    ".text",
    ".rst",
    ".adoc",
    ".org",
    ".tex",
    ".log",
    ".csv",
    ".tsv",
    ".py",
    ".pyi",
    ".js",
    ".mjs",
    ".cjs",
    ".ts",
    ".tsx",
    ".jsx",
    ".vue",
    ".svelte",
    ".go",
    ".rs",
    ".java",
    ".kt",
    ".scala",
    ".swift",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".hpp",
    ".cs",
    ".rb",
    ".php",
    ".pl",
    ".lua",
    ".r",
    ".sh",
    ".bash",
    ".zsh",
    ".fish",
    ".ps1",
    ".sql",
    ".toml",
    ".yaml",
    ".yml",
    ".json",
    ".ini",
    ".cfg",
    ".conf",
    ".xml",
    ".css",
    ".scss",
    ".proto",
    ".graphql",
    ".dockerfile",
    ".mk",
    ".cmake",
    ".gradle",
)


# Where detection ties (a short text often decodes equally well in several code pages), the
# most widely used legacy encodings win: Western Windows, then Chinese, Japanese, Korean, Cyrillic.
PREFERRED_ENCODINGS = ("cp1252", "gb18030", "big5", "shift_jis", "euc_kr", "cp1251")
# UTF-16 and UTF-32 are read only with a BOM: without one, detection takes short Latin-1 text for them.
UNDETECTED = ["utf_16", "utf_16_be", "utf_16_le", "utf_32", "utf_32_be", "utf_32_le"]


def read_text(path: Path) -> str:
    """The file as text: UTF-8 (BOM allowed), UTF-16 with a BOM, or else the legacy encoding
    detected (GBK/GB18030, Big5, Shift JIS, Windows code pages...). Binary, undecodable and empty
    files are skipped with the reason."""
    data = path.read_bytes()
    if not data.strip():
        raise SkipFile("empty file")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise SkipFile(f"not valid UTF-16 (byte {exc.start})") from None
    if b"\x00" in data[:8192]:
        raise SkipFile("binary file")
    try:
        return data.decode("utf-8-sig")  # the fast path: nearly every file
    except UnicodeDecodeError as exc:
        return decode_legacy(data, exc.start)


def decode_legacy(data: bytes, utf8_error: int) -> str:
    """Text in a legacy encoding, detected by charset-normalizer."""
    matches = charset_normalizer.from_bytes(data, cp_exclusion=UNDETECTED)
    best = matches.best()
    if best is None:
        raise SkipFile(f"binary file: not UTF-8 (byte {utf8_error}), and no other encoding fits")
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    rank = {name: i for i, name in enumerate(PREFERRED_ENCODINGS)}
    return str(min(tied, key=lambda m: rank.get(m.encoding, len(rank))))


def load_text(path: Path) -> Document:
    return Document(read_text(path)).with_whole_section()


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(SUFFIXES, load_text, isolated=False)
