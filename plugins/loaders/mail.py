"""Mail: a message (.eml) and a mailbox (.mbox), read with the standard library. Each message is
one section named by its subject and date; its From, To, Date and Subject lines stay with its body
(a search for who wrote it, or when, finds it); an HTML body is read as text. Attachments are not
read yet: their names are listed with the message."""

from __future__ import annotations

import mailbox
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path
from typing import BinaryIO

from plugins.loaders.html import parse_html
from proxy.hookspecs import hookimpl
from proxy.types import Document, Section, SkipFile

HEADERS = ("From", "To", "Cc", "Date", "Subject")


def load_eml(path: Path) -> Document:
    with path.open("rb") as file:
        message = BytesParser(policy=policy.default).parse(file)
    return _document([message])


def load_mbox(path: Path) -> Document:
    box = mailbox.mbox(path, factory=_parsed, create=False)  # type: ignore[arg-type]
    try:
        return _document(box)
    finally:
        box.close()


def _parsed(file: BinaryIO) -> EmailMessage:
    return BytesParser(policy=policy.default).parse(file)


def _document(messages: Iterator[Message] | list[Message] | mailbox.mbox) -> Document:
    parts: list[str] = []
    sections: list[Section] = []
    offset = 0
    for message in messages:
        text = _message_text(message)
        if not text.strip():
            continue
        parts.append(text + "\n\n")
        sections.append(Section(offset, offset + len(text), _heading(message)))
        offset += len(text) + 2
    if not parts:
        raise SkipFile("no message with text")
    return Document("".join(parts), sections)


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, TypeError, IndexError):  # a header the parser cannot make sense of
        value = None
    return " ".join(str(value).split()) if value else ""


def _heading(message: Message) -> str:
    subject = _header(message, "Subject") or "(no subject)"
    date = _header(message, "Date")
    return f"{subject} ({date})" if date else subject


def _message_text(message: Message) -> str:
    lines = [f"{name}: {value}" for name in HEADERS if (value := _header(message, name))]
    body, attached = _body(message)
    if attached:
        lines.append("Attachments: " + ", ".join(attached))
    return "\n".join(lines) + ("\n\n" + body.strip() if body.strip() else "")


def _body(message: Message) -> tuple[str, list[str]]:
    """The message's text and its attachments' names. Of a plain and an HTML version, the plain
    one, unless it is a stub ("view this message in a browser") much shorter than the HTML's text."""
    attached = [
        str(part.get_filename())
        for part in message.walk()
        if part.get_content_disposition() == "attachment" and part.get_filename()
    ]
    if not isinstance(message, EmailMessage):
        return "", attached
    plain = _text(message.get_body(preferencelist=("plain",)))
    html = _text(message.get_body(preferencelist=("html",)))
    html = parse_html(html).text if html else ""
    return (html if len(html.strip()) > 1.5 * len(plain.strip()) else plain), attached


def _text(part: Message | None) -> str:
    if not isinstance(part, EmailMessage):
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):  # an unknown charset, a broken encoding
        content = part.get_payload(decode=True) or b""
    if isinstance(content, bytes):
        content = content.decode("utf-8", errors="replace")
    return content if isinstance(content, str) else ""


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(".eml", load_eml)
    register(".mbox", load_mbox)
