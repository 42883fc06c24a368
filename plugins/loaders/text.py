"""Plain text and source code."""

from __future__ import annotations

import codecs
from collections.abc import Callable
from pathlib import Path

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


def read_text(path: Path) -> str:
    """The file as text: UTF-8 (BOM allowed) or UTF-16 with a BOM. Binary, undecodable and
    empty files are skipped with the reason."""
    data = path.read_bytes()
    if not data.strip():
        raise SkipFile("empty file")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    if b"\x00" in data[:8192]:
        raise SkipFile("binary file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not valid UTF-8 (byte {exc.start})") from None


def load_text(path: Path) -> Document:
    return Document(read_text(path)).with_whole_section()


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(SUFFIXES, load_text)
