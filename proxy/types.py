"""Shapes shared by the index, the plugins and the pipeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

OCR_HEADING = "OCR"  # the heading of a section whose text OCR read from an image or a scanned page
OCR_INSTALL = "pip install 'ragproxy[ocr]'"  # what brings the OCR engine


@dataclass(frozen=True, slots=True)
class Section:
    """A span of a document's text with its place in the document."""

    start: int
    end: int
    heading: str | None = None  # "Install > On Linux" for Markdown, the title for HTML; OCR_HEADING
    page: int | None = None  # 1-based, for PDF and multi-page images


@dataclass(frozen=True, slots=True)
class Document:
    """What a loader extracted from a file."""

    text: str
    sections: list[Section] = field(default_factory=list)
    note: str | None = None  # what was left unread and why ("messages after 4,000 not read: ..."): logged

    def with_whole_section(self) -> Document:
        return self if self.sections else Document(self.text, [Section(0, len(self.text))], self.note)

    def cut(self, characters: int, why: str) -> Document:
        """The document's sections that end within ``characters``, its note saying what was left
        and ``why``: a file too large to read whole is indexed as far as the limits allow."""
        sections = self.with_whole_section().sections
        kept = [s for s in sections if s.end <= characters]
        if not kept:
            first = sections[0]
            kept = [Section(first.start, min(first.end, characters), first.heading, first.page)]
        end = kept[-1].end
        left = len(sections) - len(kept)
        note = f"the last {len(self.text) - end} characters ({left} sections) not read: {why}"
        return Document(self.text[:end], kept, "; ".join(filter(None, (self.note, note))))


class SkipFile(Exception):
    """A loader cannot read this file; the message says why (it is shown by ``status``)."""


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """What the settings say about reading files, for the loaders: set around each load
    (``reading``), read by a loader with ``read_options()``."""

    ocr: bool = True  # images and scanned PDF pages are read by OCR (where its engine is installed)
    ocr_pages: int = 50  # most pages (or image frames) of one file read by OCR


_options: ContextVar[ReadOptions | None] = ContextVar("read_options", default=None)
_on_ocr_page: ContextVar[Callable[[], None] | None] = ContextVar("on_ocr_page", default=None)
_on_ocr_start: ContextVar[Callable[[], None] | None] = ContextVar("on_ocr_start", default=None)


@contextmanager
def reading(
    options: ReadOptions,
    on_ocr_page: Callable[[], None] | None = None,
    on_ocr_start: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Loads within it see ``options``; ``on_ocr_start`` is called before a loader runs OCR,
    ``on_ocr_page`` after each page OCR reads."""
    tokens = _options.set(options), _on_ocr_page.set(on_ocr_page), _on_ocr_start.set(on_ocr_start)
    try:
        yield
    finally:
        _options.reset(tokens[0])
        _on_ocr_page.reset(tokens[1])
        _on_ocr_start.reset(tokens[2])


def read_options() -> ReadOptions:
    return _options.get() or ReadOptions()


def ocr_starting() -> None:
    """A loader is about to run OCR: the reader process lets this file use the OCR engine's share
    of memory on top of its limit."""
    callback = _on_ocr_start.get()
    if callback is not None:
        callback()


def ocr_page_read() -> None:
    """A loader tells that OCR read one more page: the reader's time limit starts again, and
    ``ragproxy index`` counts it."""
    callback = _on_ocr_page.get()
    if callback is not None:
        callback()


@dataclass(frozen=True, slots=True)
class Chunk:
    ordinal: int
    text: str
    start: int
    end: int
    heading: str | None = None
    page: int | None = None


class Embedder(Protocol):
    """Turns text into vectors. ``name`` identifies the model: an index records it and refuses to
    mix vectors of different models."""

    name: str
    dim: int
    max_tokens: int

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


class Reranker(Protocol):
    """Scores (query, passage) pairs; higher is more relevant. Reorders the fused candidates."""

    name: str

    def rerank(self, query: str, texts: Sequence[str]) -> list[float]: ...
