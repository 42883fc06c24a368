"""OpenDocument text (.odt) and slides (.odp), read with odfpy.

A text document: its paragraphs, lists (an item a line, "- " before it) and tables (a row a line,
"a | b | c"); each heading starts a section named by the headings above it and its own
("Setup > On Linux"), as in Word documents.

Slides: each slide one section, named "slide N: <title>" (the title frame's text; else the
slide's own name, unless it is a default one such as "page3"; else just "slide N"), the text of
its frames, shapes and tables in reading order (top to bottom, then left to right) and its
speaker notes after it ("Notes: ..."). A slide with no text is left out."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.sax import SAXException

from plugins.loaders.common import DocumentText, HeadingPath
from plugins.loaders.containers import MAX_INFLATED, check_zip
from proxy.hookspecs import hookimpl
from proxy.types import Document, SkipFile

OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
DRAW = "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
PRESENTATION = "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0"
SVG = "urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"

_PARAGRAPH = (TEXT, "p")
_HEADING = (TEXT, "h")
_LIST = (TEXT, "list")
_TABLE = (TABLE, "table")
_BLOCKS = {_PARAGRAPH, _HEADING, _LIST, _TABLE}
# generated or hidden text: a table of contents repeats the headings, tracked changes hold
# deleted text, comments and the declarations hold none of the document's own
_LEFT_OUT = {
    (TEXT, "table-of-content"),
    (TEXT, "tracked-changes"),
    (TEXT, "note-citation"),
    (TEXT, "sequence-decls"),
    (TEXT, "variable-decls"),
    (TEXT, "user-field-decls"),
    (TEXT, "page-number"),  # a field; on a notes page made from PowerPoint's it reads "<number>"
    (OFFICE, "annotation"),
    (OFFICE, "forms"),
    (PRESENTATION, "notes"),  # read on their own, after the slide's text
    (DRAW, "page-thumbnail"),
}
_MM = {"mm": 1.0, "cm": 10.0, "in": 25.4, "pt": 25.4 / 72, "pc": 25.4 / 6, "px": 25.4 / 96, "": 1.0}
_LENGTH = re.compile(r"\s*(-?[\d.]+)\s*([a-z]*)\s*")
_ENCODED = re.compile(r"_([0-9a-fA-F]{2})_")
_DEFAULT_NAME = re.compile(r"\D*?\s*(\d+)")  # "page3", "Slide 3": names a program gave the slide


def load_odt(path: Path) -> Document:
    body = _body(path, "ODT", "text")
    written = DocumentText()
    outline = HeadingPath()
    for level, text in _blocks(body):
        if level:
            outline.enter(level, text)
            written.begin(outline.name())
        written.write(text)
    return written.document()


def load_odp(path: Path) -> Document:
    body = _body(path, "ODP", "presentation")
    written = DocumentText()
    slides = [child for child in body.childNodes if _qname(child) == (DRAW, "page")]
    for number, slide in enumerate(slides, start=1):
        text = "\n".join(_shape_texts(slide))
        notes = "\n".join(
            "\n".join(_block_texts(child))
            for child in slide.childNodes
            if _qname(child) == (PRESENTATION, "notes")
        ).strip()
        if notes:
            text += ("\n\n" if text else "") + "Notes: " + notes
        if not text:
            continue
        title = _slide_title(slide, number)
        written.add(text, f"slide {number}: {title}" if title else f"slide {number}")
    return written.document()


def open_odf(path: Path, kind: str, *, max_inflated: int = MAX_INFLATED) -> Any:
    """The OpenDocument file, parsed whole by odfpy: ``SkipFile`` when it would inflate past
    ``max_inflated`` bytes, is encrypted with a password, or is not well-formed. odfpy does not
    raise on malformed XML: it prints the whole part (the document's text) to stdout and goes on
    with what it parsed; the print is caught here, and the file skipped."""
    from odf.opendocument import load

    check_zip(path, kind, max_inflated=max_inflated)
    printed = _Printed()
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = archive.read("META-INF/manifest.xml")
        if b"encryption-data" in manifest:
            raise SkipFile(f"password-protected {kind}: encrypted files are not read")
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
            warnings.simplefilter("ignore")
            document = load(str(path))
    except SkipFile:
        raise
    except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, TypeError, AttributeError, IndexError,
            SyntaxError, EOFError, SAXException) as exc:  # fmt: skip
        raise SkipFile(f"unreadable {kind}: {type(exc).__name__}: {exc}"[:300]) from None
    if printed.failed:
        raise SkipFile(f"unreadable {kind}: malformed XML")
    return document


class _Printed(io.TextIOBase):
    """Where odfpy's prints go: nowhere, but a failed parse is noted."""

    failed = False

    def write(self, text: str) -> int:
        self.failed = self.failed or "FAILED TO PARSE" in text
        return len(text)


def _body(path: Path, kind: str, body: str) -> Any:
    """The document's office:text or office:presentation element."""
    document = open_odf(path, kind)
    # odfpy's own document.text (or .presentation) is the body's first child, in XML indented
    # between the elements (pandoc's) a blank text node: the element is looked for instead
    element = next((child for child in document.body.childNodes if _qname(child) == (OFFICE, body)), None)
    if element is None:
        raise SkipFile(f"not an {kind}: the file holds {document.mimetype or 'no known document'}"[:300])
    return element


def _qname(node: Any) -> tuple[str, str] | None:
    return getattr(node, "qname", None)


def attribute(node: Any, namespace: str, name: str) -> str | None:
    value = node.attributes.get((namespace, name)) if hasattr(node, "attributes") else None
    return str(value) if value is not None else None


def is_element(node: Any, namespace: str, name: str) -> bool:
    return getattr(node, "qname", None) == (namespace, name)


def _blocks(element: Any, prefix: str = "") -> Iterator[tuple[int, str]]:
    """(outline level, text) of each heading (level 1 and up) and (0, text) of each paragraph,
    list item and table row under ``element``, in document order."""
    for child in element.childNodes:
        qname = _qname(child)
        if qname is None or qname in _LEFT_OUT:
            continue
        if qname == _HEADING:
            text = " ".join(_inline(child).split())
            if text:
                level = attribute(child, TEXT, "outline-level") or "1"
                yield (int(level) if level.isdigit() and int(level) > 0 else 1), text
        elif qname == _PARAGRAPH:
            text = _inline(child).strip()
            if text:
                yield 0, prefix + text
        elif qname == _LIST:
            for item in child.childNodes:
                if _qname(item) in ((TEXT, "list-item"), (TEXT, "list-header")):
                    yield from _blocks(item, "- ")
        elif qname == _TABLE:
            for row in _rows(child):
                yield 0, row
        else:  # sections, frames, text boxes, shapes, groups: the blocks inside
            yield from _blocks(child, prefix)


def _block_texts(element: Any) -> Iterator[str]:
    return (text for _, text in _blocks(element))


def _rows(table: Any) -> Iterator[str]:
    for child in table.childNodes:
        qname = _qname(child)
        if qname == (TABLE, "table-row"):
            cells = [
                " ".join(" ".join(_block_texts(cell)).split())
                for cell in child.childNodes
                if _qname(cell) == (TABLE, "table-cell")  # a merged cell's covered ones have none
            ]
            line = " | ".join(cells)
            if line.strip(" |"):
                yield line
        elif qname in ((TABLE, "table-header-rows"), (TABLE, "table-rows"), (TABLE, "table-row-group")):
            yield from _rows(child)


def _inline(element: Any) -> str:
    """A paragraph's text: its spans and links, spaces (text:s), tabs and line breaks; a
    footnote's text in brackets where it is cited; a frame anchored in it on lines of its own."""
    out: list[str] = []
    for child in element.childNodes:
        qname = _qname(child)
        if qname is None:
            out.append(getattr(child, "data", "") or "")
        elif qname in _LEFT_OUT:
            continue
        elif qname == (TEXT, "s"):
            count = attribute(child, TEXT, "c") or "1"
            out.append(" " * min(int(count) if count.isdigit() else 1, 100))
        elif qname == (TEXT, "tab"):
            out.append("\t")
        elif qname == (TEXT, "line-break"):
            out.append("\n")
        elif qname == (TEXT, "note"):
            note = " ".join(" ".join(_block_texts(child)).split())
            if note:
                out.append(f" [{note}]")
        elif qname in _BLOCKS or qname == (DRAW, "frame"):
            inner = "\n".join(_block_texts(_Only(child)))
            if inner:
                out.append("\n" + inner + "\n")
        else:
            out.append(_inline(child))
    return "".join(out)


class _Only:
    """An element standing alone, for ``_blocks`` to read it as its own child."""

    def __init__(self, node: Any) -> None:
        self.childNodes = [node]


def _shape_texts(slide: Any) -> Iterator[str]:
    """The text of each frame, shape and group on the slide in reading order; a group's in its
    place, in reading order among themselves."""
    shapes = [child for child in slide.childNodes if _qname(child) and _qname(child) not in _LEFT_OUT]
    for shape in sorted(shapes, key=_position):
        if _qname(shape) == (DRAW, "g"):
            yield from _shape_texts(shape)
        else:
            text = "\n".join(_block_texts(_Only(shape)))
            if text:
                yield text


def _position(shape: Any) -> tuple[bool, float, float]:
    """Top, then left, in millimetres; a shape without a position (a group: its first shape's)
    after those with one. The sort is stable."""
    if _qname(shape) == (DRAW, "g") and attribute(shape, SVG, "y") is None:
        inner = [_position(child) for child in shape.childNodes if _qname(child)]
        return min(inner) if inner else (True, 0.0, 0.0)
    top, left = _length(attribute(shape, SVG, "y")), _length(attribute(shape, SVG, "x"))
    return (top is None, top or 0.0, left or 0.0)


def _length(value: str | None) -> float | None:
    match = _LENGTH.fullmatch(value or "")
    if match is None or match.group(2) not in _MM:
        return None
    try:
        return float(match.group(1)) * _MM[match.group(2)]
    except ValueError:
        return None


def _slide_title(slide: Any, number: int) -> str:
    for frame in _descendants(slide):
        if _qname(frame) == (DRAW, "frame") and attribute(frame, PRESENTATION, "class") == "title":
            title = " ".join(" ".join(_block_texts(frame)).split())
            if title:
                return title
    # a name some writers encode as a style name is ("Storm_20_drill")
    name = _ENCODED.sub(lambda m: chr(int(m.group(1), 16)), attribute(slide, DRAW, "name") or "")
    name = " ".join(name.split())
    default = _DEFAULT_NAME.fullmatch(name)
    return "" if default and int(default.group(1)) == number else name


def _descendants(element: Any) -> Iterator[Any]:
    for child in element.childNodes:
        if _qname(child) and _qname(child) not in _LEFT_OUT:
            yield child
            yield from _descendants(child)


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(".odt", load_odt)
    register(".odp", load_odp)
