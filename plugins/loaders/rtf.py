"""Rich Text Format (.rtf): the text, read with striprtf, one section. Characters come as escapes
in the document's code page (\\'d6\\'d0 in GBK), as Unicode escapes (\\u20013?) or, from some
writers, as raw bytes in the code page or in UTF-8; all are decoded."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from proxy.hookspecs import hookimpl
from proxy.types import Document, Section, SkipFile

_RAW_BYTE = re.compile(r"[\x80-\xff]")
_BLANK_LINES = re.compile(r"\n[ \t\f\v]*(?:\n[ \t\f\v]*)+\n")


def load_rtf(path: Path) -> Document:
    text = rtf_text(path.read_bytes())
    return Document(text, [Section(0, len(text))])


def rtf_text(raw: bytes) -> str:
    """The text of an RTF document (a file's, or a message body's): ``SkipFile`` when it is not
    RTF, cannot be decoded, or has no text."""
    from striprtf.striprtf import rtf_to_text

    raw = raw.removeprefix(b"\xef\xbb\xbf")
    if not raw.lstrip().startswith(b"{\\rtf"):
        raise SkipFile("not an RTF file: it does not start with {\\rtf")
    # RTF is 7-bit text: read byte for byte, and let striprtf decode the escapes by the
    # document's code page. A raw byte past ASCII is a character in that code page, unless the
    # writer wrote UTF-8 (which text in a code page almost never is by accident)
    markup = raw.decode("latin-1")
    if not markup.isascii() and "\\bin" not in markup:  # raw bytes outside binary data
        try:
            markup = raw.decode("utf-8")
        except UnicodeDecodeError:
            markup = _RAW_BYTE.sub(lambda match: f"\\'{ord(match.group()):02x}", markup)
    try:
        text = rtf_to_text(markup, errors="replace")  # type: ignore[no-untyped-call]
    except (LookupError, ValueError, IndexError) as exc:  # a code page Python has no codec for
        raise SkipFile(f"unreadable RTF: {type(exc).__name__}: {exc}"[:300]) from None
    lines = (line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    if not text:
        raise SkipFile("no text")
    return text


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(".rtf", load_rtf)
