"""The passage: adjacent chunks of one document merged into one numbered entry of the context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.types import OCR_HEADING


@dataclass(frozen=True, slots=True)
class Passage:
    """Adjacent chunks of one document, merged: one numbered entry of the context."""

    number: int
    collection: str
    path: str
    start: int
    end: int
    heading: str | None
    page: int | None
    score: float
    text: str
    chunk_ids: tuple[int, ...]

    def label(self) -> str:
        """``path > heading (page N)``; a passage OCR read: ``path (page N, OCR)``."""
        where = self.path
        ocr = self.heading == OCR_HEADING
        if self.heading and not ocr:
            where += f" > {self.heading}"
        marks = ([f"page {self.page}"] if self.page is not None else []) + ([OCR_HEADING] if ocr else [])
        if marks:
            where += f" ({', '.join(marks)})"
        return where

    def source(self) -> dict[str, Any]:
        return {
            "index": self.number,
            "file": self.path,
            "collection": self.collection,
            "start": self.start,
            "end": self.end,
            "heading": self.heading,
            "page": self.page,
            "score": round(self.score, 4),
        }
