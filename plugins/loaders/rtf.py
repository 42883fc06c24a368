"""Rich Text Format (.rtf): the text, read with striprtf. Characters come as escapes in the
document's code page (\\'d6\\'d0 in GBK), as Unicode escapes (\\u20013?) or, from some writers, as
raw bytes in the code page or in UTF-8; all are decoded. Headings (paragraphs in a style named
"heading N" in the style sheet, as Word and LibreOffice write them, or with an outline level)
start sections named by their heading path, as in Word files."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from plugins.loaders.common import HEADING_STYLE, HeadingPath, tidy_lines
from proxy.hookspecs import hookimpl
from proxy.types import Document, Section, SkipFile

_RAW_BYTE = re.compile(r"[\x80-\xff]")


# A heading paragraph is marked, before striprtf reads the markup, by a private-use character
# naming its level (U+E001 for level 1 ...), which comes out at the start of its line
_MARK = 0xE000
_STYLE_ENTRY = re.compile(r"\{\\s(\d+)(?![0-9])([^{}]*?);\}")  # a paragraph style: number, entry
_CONTROL = re.compile(r"\\(?!u-?\d)(?!')[a-z]+-?\d* ?")  # a control word, but not \uN or \'hh
_BRACE = re.compile(r"\\.|([{}])", re.DOTALL)  # an escape (\{ \} \\) is matched whole: not a brace
_SHEET_MAX = 1024 * 1024  # characters a style sheet is looked for in: it comes at the start
_OUTLINE = re.compile(r"\\outlinelevel(\d)(?![0-9])")
_UNMARK = {_MARK + level: None for level in range(1, 10)}
_MARKED = re.compile("^[ \t]*([\ue001-\ue009])[\ue001-\ue009 \t]*(.*)$", re.MULTILINE)


def load_rtf(path: Path) -> Document:
    marked = rtf_text(path.read_bytes(), headings=True)
    text = ""
    sections: list[Section] = []
    outline = HeadingPath()
    start = position = 0
    for match in _MARKED.finditer(marked):
        text += marked[position : match.start()].translate(_UNMARK)
        position = match.end()
        level, heading = ord(match[1]) - _MARK, match[2].strip()
        if not heading:  # an empty heading paragraph: its mark goes, its line stays
            text += marked[match.start() : match.end()].translate(_UNMARK)
            continue
        if text[start:].strip():
            sections.append(Section(start, len(text), outline.name()))
        outline.enter(level, heading)
        start = len(text)
        text += heading
    text += marked[position:].translate(_UNMARK)  # a mark not at its line's start goes too
    sections.append(Section(start, len(text), outline.name()))
    sections = [s for s in sections if text[s.start : s.end].strip()]
    if not sections:
        raise SkipFile("no text")
    return Document(text, sections)


def _style_name(raw: str, codepage: str) -> str:
    """A style sheet entry's name, its escapes decoded: \\uN (its fallback character after it
    dropped) and \\'hh bytes in the document's code page."""
    name = re.sub(r"\\u(-?\d+)\??", lambda m: chr(int(m[1]) % 65536), raw)
    try:
        return re.sub(
            r"(?:\\'[0-9a-fA-F]{2})+",
            lambda m: bytes.fromhex(m[0].replace("\\'", "")).decode(codepage, errors="replace"),
            name,
        ).strip()
    except LookupError:  # a code page Python has no codec for
        return name.strip()


def _mark_headings(markup: str) -> str:
    """The markup with a mark before each heading paragraph's text: after a ``\\sN`` whose style
    the style sheet names "heading N" (or gives an outline level), and after ``\\outlinelevelN``."""
    sheet = markup.find("{\\stylesheet")
    levels: dict[str, int] = {}
    body = 0
    if sheet != -1:
        depth, end = 0, sheet
        for brace in _BRACE.finditer(markup, sheet, sheet + _SHEET_MAX):  # escaped ones left out
            if brace[1] is None:  # an escaped character
                continue
            depth += 1 if brace[1] == "{" else -1
            end = brace.end()
            if depth == 0:
                break
        codepage = re.search(r"\\ansicpg(\d+)", markup[:sheet])
        for number, entry in _STYLE_ENTRY.findall(markup[sheet:end]):
            name = _style_name(_CONTROL.sub("", entry), f"cp{codepage[1]}" if codepage else "cp1252")
            named = HEADING_STYLE.match(name)
            outline = _OUTLINE.search(entry)
            if named:
                levels[number] = max(1, int(named[1]))
            elif outline and int(outline[1]) < 9:
                levels[number] = int(outline[1]) + 1
        body = end + 1

    def mark(level: int) -> str:
        return f"{{\\uc1\\u{_MARK + min(level, 9)}?}}"

    def styled(match: re.Match[str]) -> str:
        level = levels.get(match[1])
        return match[0] + (mark(level) if level else "")

    rest = re.sub(r"\\s(\d+)(?![0-9])", styled, markup[body:]) if levels else markup[body:]
    rest = _OUTLINE.sub(lambda m: m[0] + (mark(int(m[1]) + 1) if int(m[1]) < 9 else ""), rest)
    return markup[:body] + rest


def rtf_text(raw: bytes, *, headings: bool = False) -> str:
    """The text of an RTF document (a file's, or a message body's): ``SkipFile`` when it is not
    RTF, cannot be decoded, or has no text. ``headings``: each heading's line begins with a mark
    of its level (``_MARK`` + level)."""
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
    if headings:
        markup = _mark_headings(markup)
    try:
        text = rtf_to_text(markup, errors="replace")  # type: ignore[no-untyped-call]
    except (LookupError, ValueError, IndexError) as exc:  # a code page Python has no codec for
        raise SkipFile(f"unreadable RTF: {type(exc).__name__}: {exc}"[:300]) from None
    text = tidy_lines(text)
    if not text:
        raise SkipFile("no text")
    return text


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(".rtf", load_rtf)
