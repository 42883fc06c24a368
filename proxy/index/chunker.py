"""Structure-aware chunking: sections (headings, pages) first, then paragraphs, then sentences
(English and Chinese punctuation), packed up to a token budget with overlap."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Protocol

from proxy.text import chunk_tokens
from proxy.types import Chunk, Document, Section

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+(?=\S)|(?<=[。！？；])")


def excerpt(text: str, max_tokens: int, *, ends: bool = False) -> str:
    """About ``max_tokens`` (``chunk_tokens``) of the text: its beginning, or with ``ends``
    half from the beginning and half from the end (a pasted document's question is often
    last). Text within the limit is returned as it is."""
    tokens = chunk_tokens(text)
    if tokens <= max_tokens:
        return text
    keep = max(2, len(text) * max_tokens // tokens)
    if not ends:
        return text[:keep]
    return text[: keep // 2] + "\n…\n" + text[len(text) - keep // 2 :]


def _pieces(text: str, start: int, end: int, pattern: re.Pattern[str]) -> Iterator[tuple[int, int]]:
    position = start
    for match in pattern.finditer(text, start, end):
        if match.start() > position:
            yield position, match.start()
        position = match.end()
    if end > position:
        yield position, end


def _units(text: str, section: Section, target: int) -> Iterator[tuple[int, int, int]]:
    """Spans no larger than ``target`` tokens, with their token estimates: paragraphs, else
    sentences, else hard cuts. Blank spans are left out."""
    for p_start, p_end in _pieces(text, section.start, section.end, _PARAGRAPH):
        piece = text[p_start:p_end]
        tokens = chunk_tokens(piece)
        if tokens <= target:
            if piece.strip():
                yield p_start, p_end, tokens
            continue
        for s_start, s_end in _pieces(text, p_start, p_end, _SENTENCE):
            while s_end > s_start:
                piece = text[s_start:s_end]
                tokens = chunk_tokens(piece)
                if tokens <= target:
                    if piece.strip():
                        yield s_start, s_end, tokens
                    break
                cut = s_start + max(1, (s_end - s_start) * target // tokens)
                piece = text[s_start:cut]
                if piece.strip():
                    yield s_start, cut, chunk_tokens(piece)
                s_start = cut


def chunk_document(document: Document, target_tokens: int = 256, overlap_tokens: int = 32) -> list[Chunk]:
    text = document.text
    chunks: list[Chunk] = []
    for section in document.with_whole_section().sections:
        units = list(_units(text, section, target_tokens))
        i = 0
        while i < len(units):
            j, total = i, 0
            while j < len(units) and (j == i or total + units[j][2] <= target_tokens):
                total += units[j][2]
                j += 1
            start, end = units[i][0], units[j - 1][1]
            chunks.append(
                Chunk(len(chunks), text[start:end].strip(), start, end, section.heading, section.page)
            )
            if j >= len(units):
                break
            # Step back over trailing units that fit in the overlap, never to where we started.
            back, carried = j, 0
            while back - 1 > i and carried + units[back - 1][2] <= overlap_tokens:
                back -= 1
                carried += units[back][2]
            i = back
    return chunks


class Span(Protocol):
    """A chunk as stored: its (stripped) text and the span of the document's text it came from."""

    @property
    def text(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


def join_chunks(chunks: Sequence[Span]) -> str:
    """A document's text rebuilt from its chunks, in order (``chunk_document`` undone): the text
    two chunks share is kept once. Chunk texts are stripped, so the whitespace between two chunks
    that do not overlap comes back as one space or a blank line; where a long sentence was cut
    in two, a space may appear that the document did not have."""
    parts: list[str] = []
    covered = 0  # the document's text is rebuilt up to this offset
    previous, previous_stripped = "", 0
    for chunk in chunks:
        text = chunk.text
        stripped = max(0, chunk.end - chunk.start - len(text))  # whitespace cut from its ends
        if chunk.start < covered:
            parts.append(text[_shared_length(previous, chunk, covered) :])
        else:
            gap = chunk.start - covered
            if parts and (gap or previous_stripped or stripped):
                parts.append("\n\n" if gap > 1 else " ")
            parts.append(text)
        covered, previous, previous_stripped = max(covered, chunk.end), text, stripped
    return "".join(parts)


def _shared_length(previous: str, chunk: Span, covered: int) -> int:
    """How much of ``chunk``'s text repeats the end of the previous chunk's text: the overlap
    (``covered - chunk.start``) less the whitespace stripped from the chunk's front, found by
    matching, since only the total stripped from both ends is known."""
    overlap = covered - chunk.start
    stripped = max(0, chunk.end - chunk.start - len(chunk.text))
    tail = previous.rstrip()
    for lead in range(min(stripped, overlap) + 1):
        if tail.endswith(chunk.text[: overlap - lead].rstrip()):
            return overlap - lead
    return min(overlap, len(chunk.text))
