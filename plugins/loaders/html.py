"""HTML: the visible text, without scripts, styles and navigation; headings start sections."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

from plugins.loaders.text import read_text
from proxy.hookspecs import hookimpl
from proxy.types import Document, Section

_HIDDEN = {"script", "style", "noscript", "template", "svg", "head", "nav", "iframe", "object"}
_BLOCK = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "tr",
    "br",
    "pre",
    "blockquote",
    "table",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "header",
    "footer",
    "aside",
    "figure",
    "figcaption",
    "hr",
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.length = 0
        self.hidden = 0
        self.title = ""
        self.in_title = False
        self.heading_level = 0
        self.heading_text: list[str] = []
        self.path: list[tuple[int, str]] = []
        self.sections: list[Section] = []
        self.section_start = 0

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _HEADINGS and not self.hidden:
            self._close_section()
            self.heading_level = _HEADINGS[tag]
            self.heading_text = []
            self._emit("\n\n")
        elif tag in _BLOCK:
            self._emit("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _HEADINGS and self.heading_level:
            title = " ".join("".join(self.heading_text).split())
            level = self.heading_level
            self.path = [(lvl, t) for lvl, t in self.path if lvl < level] + [(level, title)]
            self.heading_level = 0
            self._emit("\n")
        elif tag in _BLOCK:
            self._emit("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
        if self.hidden:
            return
        if self.heading_level:
            self.heading_text.append(data)
        self._emit(data)

    def _close_section(self) -> None:
        text = "".join(self.parts)
        if text[self.section_start :].strip():
            heading = " > ".join(t for _, t in self.path) or self.title.strip() or None
            self.sections.append(Section(self.section_start, len(text), heading))
        self.section_start = self.length


def parse_html(markup: str) -> Document:
    parser = _Extractor()
    parser.feed(markup)
    parser.close()
    parser._close_section()
    return Document("".join(parser.parts), parser.sections)


def load_html(path: Path) -> Document:
    return parse_html(read_text(path))


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register((".html", ".htm", ".xhtml"), load_html)
