"""What several loaders share: the document's text and sections written a piece at a time, the
path of headings a section is named by, the names editors give heading styles, and text whose
lines are tidied."""

from __future__ import annotations

import re

from proxy.types import Document, Section, SkipFile

# A heading style's name: Word stores its built-in ones as "heading N" whatever the language of its
# interface; some editors name theirs 标题 N (標題 N)
HEADING_STYLE = re.compile(r"(?:heading|标题|標題)\s*(\d)\s*$", re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n[ \t\f\v]*(?:\n[ \t\f\v]*)+\n")


class HeadingPath:
    """The headings above the current place in a document, outermost first: ``Install > On
    Linux``."""

    def __init__(self) -> None:
        self._headings: list[tuple[int, str]] = []

    def enter(self, level: int, heading: str) -> None:
        """A heading of ``level`` (1 outermost) begins: it replaces those of its level and below."""
        self._headings = [(lvl, t) for lvl, t in self._headings if lvl < level] + [(level, heading)]

    def name(self) -> str | None:
        return " > ".join(text for _, text in self._headings) or None


def tidy_lines(text: str) -> str:
    """Lines without trailing spaces, runs of blank lines as one, the ends stripped."""
    lines = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return _BLANK_LINES.sub("\n\n", lines).strip()


class DocumentText:
    """A document's text written a piece at a time, each piece followed by a blank line, and its
    sections. ``add`` writes a piece that is a section of its own (a slide, a chapter, a page):
    the section ends with the piece. ``begin`` opens a section that the pieces ``write`` adds
    fill (a heading and the paragraphs under it): it ends where the next one begins."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._sections: list[Section] = []
        self._length = 0
        self._open: tuple[int, str | None] | None = None  # the open section's start and heading

    def __len__(self) -> int:
        """Characters written so far."""
        return self._length

    def add(self, text: str, heading: str | None = None, page: int | None = None) -> None:
        self._close()
        self._sections.append(Section(self._length, self._length + len(text), heading, page))
        self._put(text)

    def begin(self, heading: str | None) -> None:
        self._close()
        self._open = (self._length, heading)

    def write(self, text: str) -> None:
        if self._open is None:
            self._open = (self._length, None)
        self._put(text)

    def document(self, note: str | None = None, *, empty: str = "no text") -> Document:
        """The document; ``SkipFile(empty)`` if nothing was written."""
        self._close()
        if not self._sections:
            raise SkipFile(empty)
        return Document("".join(self._parts), self._sections, note)

    def _put(self, text: str) -> None:
        self._parts.append(text + "\n\n")
        self._length += len(text) + 2

    def _close(self) -> None:
        if self._open is not None and self._length > self._open[0]:
            self._sections.append(Section(self._open[0], self._length, self._open[1]))
        self._open = None
