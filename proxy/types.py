"""Shapes shared by the index, the plugins and the pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Section:
    """A span of a document's text with its place in the document."""

    start: int
    end: int
    heading: str | None = None  # "Install > On Linux" for Markdown, the title for HTML
    page: int | None = None  # 1-based, for PDF


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
