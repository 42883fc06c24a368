"""Word documents (.docx): paragraphs and tables (a row a line, "a | b | c") in document order,
those in content controls and text boxes too; headings ("Heading N" styles, or an outline
level) start sections."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from plugins.loaders.common import HEADING_STYLE, DocumentText, HeadingPath
from plugins.loaders.containers import check_zip
from proxy.hookspecs import hookimpl
from proxy.types import Document, SkipFile

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"


def load_docx(path: Path) -> Document:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    check_zip(path, "DOCX")
    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, SyntaxError) as exc:  # lxml's
        raise SkipFile(f"unreadable DOCX: {type(exc).__name__}: {exc}"[:300]) from None
    levels = _style_levels(document)
    written = DocumentText()
    outline = HeadingPath()
    for element in _blocks(document.element.body):  # paragraphs and tables in document order
        if element.tag == _W + "tbl":  # a row a line, in the section it stands in
            table = Table(element, document)
            rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
            text = "\n".join(row for row in rows if row.strip(" |"))
            if text:
                written.write(text)
            continue
        paragraph = Paragraph(element, document)
        text = paragraph.text.strip()
        level = _level(element, levels)
        if level and text:
            outline.enter(level, text)
            written.begin(outline.name())
        boxes = [box for p in _box_paragraphs(element) if (box := Paragraph(p, document).text.strip())]
        text = "\n".join(filter(None, (text, *boxes)))  # a text box's text after its anchor's
        if text:
            written.write(text)
    return written.document(empty="empty document")


def _blocks(parent: Any) -> Iterator[Any]:
    """The body's paragraphs and tables in order, those inside content controls (``w:sdt``, as
    Word's templates and forms wrap them) too."""
    for child in parent.iterchildren():
        if child.tag in (_W + "p", _W + "tbl"):
            yield child
        elif child.tag == _W + "sdt":
            for content in child.iterchildren(_W + "sdtContent"):
                yield from _blocks(content)


def _box_paragraphs(paragraph: Any) -> Iterator[Any]:
    """The paragraphs of the text boxes anchored in ``paragraph`` (a box's inside it, in their
    place), each once: Word writes a text box twice, as a drawing and again for older readers
    (``mc:Fallback``), which is left out."""
    for inner in paragraph.iter(_W + "p"):
        if inner is paragraph:
            continue
        for ancestor in inner.iterancestors():
            if ancestor is paragraph:
                yield inner
                break
            if ancestor.tag == _MC_FALLBACK:
                break


def _style_levels(document: Any) -> dict[str, int]:
    """Heading level (1-9) per paragraph style id: a style named "Heading N" (as Word stores its
    built-in ones, whatever the language of its interface; 标题 N as some editors name theirs), or
    one with an outline level."""
    levels: dict[str, int] = {}
    for style in document.styles.element.iterchildren(_W + "style"):
        style_id = style.get(_W + "styleId")
        name = style.find(_W + "name")
        match = HEADING_STYLE.match((name.get(_W + "val") or "") if name is not None else "")
        outline = style.find(f"{_W}pPr/{_W}outlineLvl")
        if match and style_id:
            levels[style_id] = int(match[1]) or 1
        elif outline is not None and style_id and (value := outline.get(_W + "val", "")).isdigit():
            if int(value) < 9:
                levels[style_id] = int(value) + 1
    return levels


def _level(paragraph: Any, levels: dict[str, int]) -> int:
    """The paragraph's heading level, 0 if it is not a heading: its own outline level, else its
    style's."""
    outline = paragraph.find(f"{_W}pPr/{_W}outlineLvl")
    if outline is not None and (value := outline.get(_W + "val", "")).isdigit():
        return int(value) + 1 if int(value) < 9 else 0
    style = paragraph.find(f"{_W}pPr/{_W}pStyle")
    return levels.get(style.get(_W + "val", ""), 0) if style is not None else 0


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(".docx", load_docx)
