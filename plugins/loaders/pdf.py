"""PDF: the text of each page, with its page number (pypdf)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from proxy.hookspecs import hookimpl
from proxy.types import Document, Section, SkipFile


def load_pdf(path: Path) -> Document:
    import pypdf
    from pypdf.errors import PyPdfError

    parts: list[str] = []
    sections: list[Section] = []
    offset = 0
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted:
            raise SkipFile("encrypted PDF")
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").strip()
            if text:
                sections.append(Section(offset, offset + len(text), page=number))
                parts.append(text + "\n\n")
                offset += len(text) + 2
    except SkipFile:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise SkipFile(f"unreadable PDF: {type(exc).__name__}: {exc}"[:300]) from None
    if not sections:
        raise SkipFile("PDF has no extractable text (scanned?)")
    return Document("".join(parts), sections)


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(".pdf", load_pdf)
