"""PDF: the text of each page, with its page number (pypdf). A page with no text layer (a scan), or
one whose only text is a stamp or a page number over an image (a scan a scanner or a copier
numbered), is rendered (pypdfium2) and read by OCR, up to the OCR page limit per file; its
section is headed ``OCR``. With OCR off, or its engine not installed, a page without text is
left out, and one with a stamp keeps its stamp."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from plugins.loaders.common import DocumentText
from plugins.loaders.ocr import MAX_SIDE, missing, read_image
from proxy.hookspecs import hookimpl
from proxy.types import (
    OCR_HEADING,
    Document,
    SkipFile,
    ocr_page_read,
    ocr_starting,
    read_options,
)

RENDER_DPI = 200  # a scanned page is rendered at this resolution, its longer side at most MAX_SIDE
# A page whose text layer is shorter than this and which draws an image is taken for a scan with a
# stamp ("Page 3 of 40", "CONFIDENTIAL 000123"), and read by OCR too
STAMP_CHARACTERS = 40


def load_pdf(path: Path) -> Document:
    import pypdf
    from pypdf.errors import PyPdfError

    pages: dict[int, tuple[str, str | None]] = {}  # page number -> (text, heading)
    scanned: list[int] = []
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted:
            raise SkipFile("encrypted PDF")
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").strip()
            if text:
                pages[number] = (text, None)
            if not text or (len(text) < STAMP_CHARACTERS and _draws_image(page)):
                scanned.append(number)
    except SkipFile:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise SkipFile(f"unreadable PDF: {type(exc).__name__}: {exc}"[:300]) from None
    options = read_options()
    notes: list[str] = []
    unread = "OCR is off" if not options.ocr else missing()
    if scanned and not unread:
        read, failed = _ocr_pages(path, scanned[: options.ocr_pages])
        for number, text in read:
            if len(text) > len(pages.get(number, ("", None))[0]):  # OCR read more than the stamp
                pages[number] = (text, OCR_HEADING)
        if failed:
            notes.append(failed)
        if len(scanned) > options.ocr_pages:
            rest, limit = scanned[options.ocr_pages :], options.ocr_pages
            pages_text = f"{len(rest)} scanned page" + ("s" if len(rest) > 1 else "")
            notes.append(f"{pages_text} ({_span(rest)}) not read by OCR: the OCR page limit is {limit}")
    if not pages:
        if not scanned:
            raise SkipFile("PDF has no extractable text")
        if unread:
            raise SkipFile(f"PDF has no extractable text (scanned?); {unread}")
        raise SkipFile("PDF has no extractable text, and OCR found none")
    if scanned and unread and options.ocr:  # left out for want of the engine: say how to get it
        without = f"{len(scanned)} scanned page" + ("s" if len(scanned) > 1 else "")
        notes.append(f"{without} ({_span(scanned)}) not read: {unread}")
    written = DocumentText()
    for number in sorted(pages):
        text, heading = pages[number]
        written.add(text, heading, number)
    return written.document("; ".join(notes) or None)


def _ocr_pages(path: Path, numbers: list[int]) -> tuple[list[tuple[int, str]], str | None]:
    """The text OCR reads on each page of ``numbers``, and what could not be rendered, if any:
    the text layer of the other pages is kept whatever the renderer makes of the file."""
    import pypdfium2

    read: list[tuple[int, str]] = []
    failed: list[int] = []
    ocr_starting()
    try:
        document = pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError as exc:
        return [], f"{_span(numbers)} not read by OCR: the renderer cannot open the file ({exc})"[:300]
    try:
        for number in numbers:
            try:
                page = document[number - 1]
                try:
                    width, height = page.get_size()  # points
                    scale = min(RENDER_DPI / 72, MAX_SIDE / max(width, height, 1))
                    bitmap = page.render(scale=scale, may_draw_forms=False)
                finally:
                    page.close()
            except pypdfium2.PdfiumError:
                failed.append(number)
                continue
            with bitmap.to_pil() as image:
                read.append((number, read_image(image).strip()))
            bitmap.close()
            ocr_page_read()
    finally:
        document.close()
    return read, (f"{_span(failed)} not read by OCR: the renderer failed on them" if failed else None)


def _draws_image(page: Any) -> bool:
    """Whether the page's resources hold an image (directly, or in a form it draws)."""

    def images(holder: Any) -> Iterator[Any]:
        resources = _resolved(holder, "/Resources")
        objects = _resolved(resources, "/XObject") if resources is not None else None
        for reference in (objects or {}).values():
            yield reference.get_object()

    try:
        for drawn in images(page):
            if drawn.get("/Subtype") == "/Image":
                return True
            if any(inner.get("/Subtype") == "/Image" for inner in images(drawn)):
                return True
    except (AttributeError, KeyError, TypeError, ValueError):  # resources not shaped as they should be
        return False
    return False


def _resolved(holder: Any, key: str) -> Any:
    value = holder.get(key)
    return value.get_object() if value is not None else None


def _span(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"page {numbers[0]}"
    if numbers[-1] - numbers[0] == len(numbers) - 1:
        return f"pages {numbers[0]}-{numbers[-1]}"
    shown = ", ".join(str(n) for n in numbers[:5])
    return f"pages {shown}" + (", ..." if len(numbers) > 5 else "")


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(".pdf", load_pdf)
