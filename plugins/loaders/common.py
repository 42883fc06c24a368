"""What several loaders share: the path of headings a section is named by, the names editors give
heading styles, and text whose lines are tidied."""

from __future__ import annotations

import re

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
