"""PowerPoint slides (.pptx): each slide one section, named "slide N: <title>" ("slide N" when it
has no title); the text of its shapes in reading order (top to bottom, then left to right; a
group's shapes in their place), a table a row a line ("a | b | c"), and the speaker notes after
the slide's text. A slide with no text is left out."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from plugins.loaders.common import DocumentText
from plugins.loaders.containers import check_zip
from proxy.hookspecs import hookimpl
from proxy.types import Document, SkipFile


def load_pptx(path: Path) -> Document:
    import pptx
    from pptx.exc import PythonPptxError

    check_zip(path, "PPTX")
    written = DocumentText()
    try:
        presentation = pptx.Presentation(str(path))
        for number, slide in enumerate(presentation.slides, start=1):
            text = _slide_text(slide)
            if not text:
                continue
            title = _title(slide)
            written.add(text, f"slide {number}: {title}" if title else f"slide {number}")
    except (
        PythonPptxError,
        zipfile.BadZipFile,
        KeyError,
        ValueError,
        SyntaxError,
    ) as exc:  # lxml's XMLSyntaxError is one
        raise SkipFile(f"unreadable PPTX: {type(exc).__name__}: {exc}"[:300]) from None
    return written.document()


def _slide_text(slide: Any) -> str:
    text = "\n".join(_shape_texts(slide.shapes))
    notes = _notes(slide)
    if notes:
        text += ("\n\n" if text else "") + "Notes: " + notes
    return text


def _title(slide: Any) -> str:
    shape = slide.shapes.title
    if shape is None or not shape.has_text_frame:
        return ""
    return " ".join(shape.text_frame.text.split())


def _notes(slide: Any) -> str:
    if not slide.has_notes_slide:
        return ""
    frame = slide.notes_slide.notes_text_frame
    return _lines(frame.text) if frame is not None else ""


def _shape_texts(shapes: Iterable[Any]) -> Iterator[str]:
    """The text of each shape with any, in reading order; a group's shapes in the group's place,
    in reading order among themselves."""
    from pptx.shapes.group import GroupShape

    for shape in sorted(shapes, key=_position):
        if isinstance(shape, GroupShape):
            yield from _shape_texts(shape.shapes)
        elif shape.has_table:
            for row in shape.table.rows:
                line = " | ".join(" ".join(cell.text.split()) for cell in row.cells)
                if line.strip(" |"):
                    yield line
        elif shape.has_text_frame and (text := _lines(shape.text_frame.text)):
            yield text


def _position(shape: Any) -> tuple[bool, int, int]:
    """Top, then left; a shape with no position (inherited from nothing) after those with one.
    The sort is stable: shapes at the same place keep their order on the slide."""
    top, left = shape.top, shape.left
    return (top is None, top or 0, left or 0)


def _lines(text: str) -> str:
    """The text's non-blank lines, a line break inside a paragraph ("\\v") a line too."""
    return "\n".join(line.strip() for line in text.replace("\v", "\n").splitlines() if line.strip())


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(".pptx", load_pptx)
