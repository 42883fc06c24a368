"""E-books (.epub), read with ebooklib: the chapters in reading (spine) order, each one section
named by its title in the book's table of contents, else by its first heading (or its <title>).
A chapter's XHTML is read as HTML is, visible text only; the navigation document and images are
left out. A book whose chapters are encrypted (DRM) is skipped."""

from __future__ import annotations

import posixpath
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from plugins.loaders.common import DocumentText, tidy_lines
from plugins.loaders.containers import check_zip
from plugins.loaders.html import parse_html
from proxy.hookspecs import hookimpl
from proxy.types import Document, SkipFile

_ENCRYPTED = re.compile(rb"""<(?:\w+:)?CipherReference[^>]*\bURI\s*=\s*["']([^"']*)["']""")
_CONTENT = (".xhtml", ".html", ".htm", ".xml", ".opf", ".ncx")  # fonts may be obfuscated; these not
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def load_epub(path: Path) -> Document:
    import ebooklib
    from ebooklib import epub

    check_zip(path, "EPUB")
    _check_not_encrypted(path)
    try:
        book = epub.read_epub(str(path), options={"ignore_ncx": False})
    except epub.EpubException as exc:
        raise SkipFile(f"unreadable EPUB: {getattr(exc, 'msg', exc)}"[:300]) from None
    except (
        zipfile.BadZipFile,
        KeyError,
        ValueError,
        IndexError,
        AttributeError,
        SyntaxError,
    ) as exc:  # lxml's XMLSyntaxError is one
        raise SkipFile(f"unreadable EPUB: {type(exc).__name__}: {exc}"[:300]) from None
    titles = _toc_titles(book.toc)
    by_name = {posixpath.basename(name): title for name, title in reversed(titles.items())}
    written = DocumentText()
    seen: set[str] = set()
    for entry in book.spine:
        idref = entry[0] if isinstance(entry, tuple | list) else entry
        item = book.get_item_with_id(idref)
        if (
            item is None
            or idref in seen
            or isinstance(item, epub.EpubNav)
            or item.get_type() != ebooklib.ITEM_DOCUMENT
            or "nav" in (getattr(item, "properties", None) or ())
        ):
            continue
        seen.add(idref)
        page = parse_html(_decode(item.get_content()))
        text = tidy_lines(page.text)
        if not text:
            continue
        name = posixpath.normpath(unquote(item.file_name or ""))
        title = titles.get(name) or by_name.get(posixpath.basename(name)) or _first_heading(page)
        written.add(text, title)
    return written.document()


def _check_not_encrypted(path: Path) -> None:
    """A book sold with DRM lists its encrypted chapters in META-INF/encryption.xml (a book
    with obfuscated fonts lists only those)."""
    with zipfile.ZipFile(path) as archive:
        try:
            listing = archive.read("META-INF/encryption.xml")
        except KeyError:
            return
    if any(
        unquote(uri.decode("utf-8", "replace")).lower().endswith(_CONTENT)
        for uri in _ENCRYPTED.findall(listing)
    ):
        raise SkipFile("encrypted EPUB (DRM): its chapters cannot be read")


def _toc_titles(toc: Iterable[Any]) -> dict[str, str]:
    """File -> title from the table of contents: the first entry for the whole file, else the
    first for a place in it."""
    whole: dict[str, str] = {}
    part: dict[str, str] = {}

    def walk(entries: Iterable[Any]) -> None:
        for entry in entries:
            if isinstance(entry, tuple | list):
                walk(entry)  # (section, [children])
                continue
            href = getattr(entry, "href", None) or getattr(entry, "file_name", None) or ""
            title = " ".join(str(getattr(entry, "title", "") or "").split())
            name, _, fragment = unquote(str(href)).partition("#")
            if name and title:
                (part if fragment else whole).setdefault(posixpath.normpath(name), title)

    walk(toc)
    return {**part, **whole}


def _first_heading(page: Document) -> str | None:
    """The chapter's first heading (h1-h6), or its <title> when text comes before any."""
    return next((section.heading for section in page.sections if section.heading), None)


def _decode(content: bytes) -> str:
    if content.startswith((b"\xff\xfe", b"\xfe\xff")):
        return content.decode("utf-16", errors="replace")
    declared = _XML_ENCODING.match(content)
    try:
        text = content.decode(declared.group(1).decode() if declared else "utf-8", errors="replace")
    except LookupError:
        text = content.decode("utf-8", errors="replace")
    return text.removeprefix("\ufeff")


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(".epub", load_epub)
