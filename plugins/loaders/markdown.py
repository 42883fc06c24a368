"""Markdown: each heading starts a section whose heading path (``A > B``) is kept as context."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from plugins.loaders.text import read_text
from proxy.hookspecs import hookimpl
from proxy.types import Document, Section

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_ANCHOR = re.compile(r"\s*\{\s*#[^}]*\}\s*$")  # "Title { #title }" heading ids


def parse_markdown(text: str) -> Document:
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    start = body = 0  # where the section starts, and its text after the heading line
    fence: str | None = None
    offset = 0
    for line in text.splitlines(keepends=True):
        fence_match = _FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)[0]
            fence = None if fence == marker else (fence or marker)
        heading = None if fence else _HEADING.match(line.rstrip("\r\n"))
        if heading:
            if text[body:offset].strip():  # a heading with nothing under it makes no section
                sections.append(Section(start, offset, _joined(path)))
            level = len(heading.group(1))
            title = _ANCHOR.sub("", heading.group(2)).strip()
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
            start, body = offset, offset + len(line)
        offset += len(line)
    if text[body:].strip():
        sections.append(Section(start, len(text), _joined(path)))
    return Document(text, sections)


def _joined(path: list[tuple[int, str]]) -> str | None:
    return " > ".join(title for _, title in path) or None


def load_markdown(path: Path) -> Document:
    return parse_markdown(read_text(path))


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register((".md", ".markdown", ".mdx"), load_markdown, isolated=False)
