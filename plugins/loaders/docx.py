"""Word documents (.docx): paragraphs and tables (a row a line, "a | b | c") in document order;
"Heading N" styles start sections."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

from plugins.loaders.containers import check_zip
from proxy.hookspecs import hookimpl
from proxy.types import Document, Section, SkipFile


def load_docx(path: Path) -> Document:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    check_zip(path, "DOCX")
    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise SkipFile(f"unreadable DOCX: {type(exc).__name__}: {exc}"[:300]) from None
    parts: list[str] = []
    sections: list[Section] = []
    headings: list[tuple[int, str]] = []
    offset = start = 0
    for block in document.iter_inner_content():  # paragraphs and tables in document order
        if isinstance(block, Table):  # a row a line, in the section it stands in
            rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in block.rows]
            text = "\n".join(row for row in rows if row.strip(" |"))
            if text:
                parts.append(text + "\n\n")
                offset += len(text) + 2
            continue
        text = block.text.strip()
        style = block.style.name if block.style is not None else ""
        if style.startswith("Heading") and text:
            if offset > start:
                sections.append(Section(start, offset, " > ".join(t for _, t in headings) or None))
            level = int(style.split()[-1]) if style.split()[-1].isdigit() else 1
            headings = [(lvl, t) for lvl, t in headings if lvl < level] + [(level, text)]
            start = offset
        if text:
            parts.append(text + "\n\n")
            offset += len(text) + 2
    if offset > start:
        sections.append(Section(start, offset, " > ".join(t for _, t in headings) or None))
    if not parts:
        raise SkipFile("empty document")
    return Document("".join(parts), sections)


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(".docx", load_docx)
