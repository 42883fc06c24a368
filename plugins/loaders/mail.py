"""Mail: a message (.eml) and a mailbox (.mbox), read with the standard library, and an Outlook
message (.msg), read with extract-msg into the same shape. Each message is one section named by
its subject and date; its From, To, Cc, Date and Subject lines stay with its body (a search for
who wrote it, or when, finds it); an HTML body is read as text. An attachment in a
format ragproxy reads (a PDF, a Word file, a slide deck...) is read by its own loader and indexed
as part of the message, its sections named ``Subject (Date) > file.pdf``.

A mailbox may be gigabytes: it is read a block at a time, one message in memory at once (at most
``MAX_MESSAGE`` bytes of it), and reading stops, saying where, past ``MAX_TEXT`` characters or
``BUDGET`` seconds, so the messages before are indexed rather than the whole file skipped."""

from __future__ import annotations

import binascii
import functools
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, TypeVar

from plugins.loaders.common import DocumentText
from plugins.loaders.html import parse_html
from proxy.hookspecs import hookimpl
from proxy.types import Document, SkipFile

if TYPE_CHECKING:
    from extract_msg import MSGFile

HEADERS = ("From", "To", "Cc", "Date", "Subject")
MAX_MESSAGE = 32 * 1024 * 1024  # bytes of one message read; the rest (of a huge attachment) is not
MAX_ATTACHMENT = 20 * 1024 * 1024  # bytes: a larger attachment is named, not read
MAX_TEXT = 10_000_000  # characters of a mailbox's text; the messages after are not read
BUDGET = 60.0  # seconds of reading one mailbox; the messages after are not read
_BLOCK = 1 << 20
_MARK = b"\nFrom "  # a message of an mbox starts with a "From " line
# A long run of base64 lines: an attachment's body, set aside before the message is parsed (the
# standard parser holds about ten times a body's size while it splits it into lines)
_BASE64_RUN = re.compile(rb"(?:[A-Za-z0-9+/=]{40,120}+\r?\n){256,}+")  # possessive: no backtracking state
_ASIDE = "ragproxy-aside-"
_M = TypeVar("_M")


class Parsed(NamedTuple):
    """A parsed message whose long base64 bodies were set aside: each stands in the message as a
    line naming it, and ``aside`` holds its bytes (a view of the raw message, not a copy)."""

    message: EmailMessage
    aside: dict[str, memoryview]


def load_eml(path: Path) -> Document:
    with path.open("rb") as file:
        head = file.read(MAX_MESSAGE)
    return _document(iter([parse_message(head)]), _read_eml)


def load_mbox(path: Path) -> Document:
    with path.open("rb") as file:
        return _document((parse_message(_envelope_dropped(raw)) for raw in split_mbox(file)), _read_eml)


def load_msg(path: Path) -> Document:
    """An Outlook message (.msg): a compound file read with extract-msg, laid out as an .eml is.
    A damaged attachment is named, not read, and a damaged RTF body left out; a file that is
    no compound file, or holds no message, is skipped with the reason."""
    import extract_msg
    from extract_msg.enums import ErrorBehavior

    # Its log of the defects it tolerates (a traceback each) would only repeat what the text
    # and the skip reasons say
    logging.getLogger("extract_msg").setLevel(logging.CRITICAL + 1)
    tolerated = (
        ErrorBehavior.ATTACH_SUPPRESS_ALL
        | ErrorBehavior.RTFDE
        | ErrorBehavior.STANDARDS_VIOLATION
        | ErrorBehavior.NAMED_NAME_STREAM
    )
    try:
        message = extract_msg.openMsg(path, strict=False, errorBehavior=tolerated)
    except Exception as exc:  # not a compound file, a damaged one, or not a message
        raise SkipFile(f"not a readable Outlook message: {type(exc).__name__}: {exc}"[:300]) from None
    try:
        if not message.classType:  # PidTagMessageClass
            raise SkipFile("not an Outlook message: a compound file with no message class")
        return _document(iter([message]), _read_msg)
    except SkipFile:
        raise
    except Exception as exc:  # a property the library cannot make sense of
        raise SkipFile(f"unreadable Outlook message: {type(exc).__name__}: {exc}"[:300]) from None
    finally:
        message.close()


def split_mbox(file: BinaryIO, cap: int = MAX_MESSAGE, block: int = _BLOCK) -> Iterator[bytes]:
    """The messages of an mbox, each its first ``cap`` bytes (its "From " line included), read a
    block at a time: a gigabyte mailbox, or one with a gigabyte line, never sits in memory."""
    current = bytearray()
    pending = b""
    while chunk := file.read(block):
        data = pending + chunk
        position = 0
        while (hit := data.find(_MARK, position)) != -1:
            current += data[position : hit + 1][: max(0, cap - len(current))]
            if current.strip():
                yield bytes(current)
            current = bytearray()
            position = hit + 1
        keep = max(position, len(data) - len(_MARK) + 1)  # a mark may straddle two blocks
        current += data[position:keep][: max(0, cap - len(current))]
        pending = data[keep:]
    current += pending[: max(0, cap - len(current))]
    if current.strip():
        yield bytes(current)


def _envelope_dropped(raw: bytes) -> bytes:
    if raw.startswith(b"From "):
        newline = raw.find(b"\n")
        return raw[newline + 1 :] if newline != -1 else b""
    return raw


def parse_message(raw: bytes) -> Parsed:
    aside: dict[str, memoryview] = {}
    view = memoryview(raw)

    def set_aside(match: re.Match[bytes]) -> bytes:
        name = f"{_ASIDE}{len(aside)}"
        aside[name] = view[match.start() : match.end()]
        return name.encode() + b"\n"

    slim = _BASE64_RUN.sub(set_aside, raw) if len(raw) > 64 * 1024 else raw
    return Parsed(BytesParser(policy=policy.default).parsebytes(slim), aside)


def _payload(part: Message, aside: dict[str, memoryview]) -> bytes | None:
    """A part's body, decoded from its transfer encoding, its set-aside lines put back."""
    raw = part.get_payload()
    if isinstance(raw, str) and raw.startswith(_ASIDE):
        name, _, rest = raw.partition("\n")
        if name in aside:
            return _base64(bytes(aside[name]) + rest.encode("ascii", "ignore"))
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError):
        return None
    return data if isinstance(data, bytes) else None


def _base64(data: bytes) -> bytes:
    """Base64 decoded as the mail parser decodes it: a body cut short (a message past
    ``MAX_MESSAGE``, a download cut off) gives its whole groups, not an error."""
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        letters = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        return binascii.a2b_base64(letters[: len(letters) // 4 * 4])


class _Read(NamedTuple):
    """A message as read: its heading, its headers and text, and the attachments read."""

    heading: str
    text: str
    attachments: list[tuple[str, Document]]


def _document(messages: Iterator[_M], read: Callable[[_M], _Read]) -> Document:
    written = DocumentText()
    count = 0
    note = None
    deadline = time.monotonic() + BUDGET
    for message in messages:
        if len(written) > MAX_TEXT or time.monotonic() > deadline:
            why = (
                f"over {MAX_TEXT} characters"
                if len(written) > MAX_TEXT
                else f"reading took over {BUDGET:g} s"
            )
            note = f"messages after the first {count} not read: {why}"
            break
        count += 1
        heading, text, attachments = read(message)
        if text.strip():
            written.add(text, heading)
        for name, document in attachments:
            for section in document.with_whole_section().sections:
                piece = document.text[section.start : section.end].strip()
                if not piece:
                    continue
                named = f"{heading} > {name}" + (f" > {section.heading}" if section.heading else "")
                written.add(piece, named, section.page)
    return written.document(note, empty="no message with text")


def _read_eml(parsed: Parsed) -> _Read:
    message, aside = parsed
    fields = [(name, _header(message, name)) for name in HEADERS]
    attachments = ((name, functools.partial(_payload, part, aside)) for name, part in _attachments(message))
    return _read(_heading(message), fields, _body(message, aside), attachments)


def _read(
    heading: str,
    fields: list[tuple[str, str]],
    body: str,
    attachments: Iterable[tuple[str, Callable[[], bytes | None]]],
) -> _Read:
    """The message's headers and text, with its attachments named (and why one was not read),
    and the attachments that were read; each attachment's bytes are taken only if its format
    is one ragproxy reads."""
    lines = [f"{name}: {value}" for name, value in fields if value]
    named: list[str] = []
    documents: list[tuple[str, Document]] = []
    for name, data in attachments:
        try:
            documents.append((name, _read_attachment(name, data)))
            named.append(name)
        except SkipFile as exc:
            named.append(f"{name} (not read: {exc})")
    if named:
        lines.append("Attachments: " + ", ".join(named))
    text = "\n".join(lines) + ("\n\n" + body.strip() if body.strip() else "")
    return _Read(heading, text, documents)


def _read_msg(message: MSGFile) -> _Read:
    from extract_msg.msg_classes import MessageBase

    subject = _one_line(message.getStringStream("__substg1.0_0037"))  # PidTagSubject
    date = ""
    fields: dict[str, object] = {}
    if isinstance(message, MessageBase):  # a note, a meeting, a task... (not a bare MSGFile)
        date = _header(message.header, "Date")  # the internet headers', else from the sending time
        fields = {"From": message.sender, "To": message.to, "Cc": message.cc}
    if not date:
        sent = message.getPropertyVal("00390040") or message.getPropertyVal("0E060040")  # submit, delivery
        date = format_datetime(sent) if isinstance(sent, datetime) else ""
    fields |= {"Date": date, "Subject": subject}
    lines = [(name, _one_line(fields.get(name))) for name in HEADERS]
    return _read(_titled(subject, date), lines, _msg_body(message), _msg_attachments(message))


def _msg_body(message: MSGFile) -> str:
    """The plain body, else the HTML body's text, else the text of the RTF body (the library's
    own reading of RTF that wraps HTML or plain text, else the RTF loader's)."""
    from extract_msg.enums import DeencapType
    from extract_msg.msg_classes import MessageBase

    from plugins.loaders.rtf import rtf_text

    plain = message.getStringStream("__substg1.0_1000") or ""  # PidTagBody
    html: bytes | str | None = message.getStream("__substg1.0_10130102")  # PidTagBodyHtml
    rtf = None
    if not plain and not html and isinstance(message, MessageBase):
        rtf = message.rtfBody  # PidTagRtfCompressed, decompressed
        if rtf:
            plain = message.body or ""  # the text an RTF body wraps
            html = message.deencapsulateBody(rtf, DeencapType.HTML)  # or the HTML it wraps
    if isinstance(html, bytes):
        html = _decoded(html.rstrip(b"\0"), message.getPropertyVal("3FDE0003"))  # PidTagInternetCodepage
    text = _better(plain.rstrip("\0"), html or "")
    if rtf and not text.strip():
        try:
            text = rtf_text(rtf)
        except SkipFile:
            pass
    return text.replace("\r\n", "\n")


def _decoded(data: bytes, codepage: object) -> str:
    """HTML in the message's code page, else UTF-8, else the encoding detected."""
    from extract_msg.encoding import lookupCodePage
    from extract_msg.exceptions import ExMsgBaseException

    from plugins.loaders.text import decode_legacy

    encodings = ["utf-8"]
    if isinstance(codepage, int):
        try:
            encodings.insert(0, lookupCodePage(codepage))  # 936 is taken as GB2312: GBK is detected
        except ExMsgBaseException:  # a code page unknown, or with no codec here
            pass
    for encoding in encodings:
        try:
            return data.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
    try:
        return decode_legacy(data, 0)
    except SkipFile:
        return ""


def _msg_attachments(message: MSGFile) -> Iterator[tuple[str, Callable[[], bytes | None]]]:
    """Each attachment's name and bytes; an attached message named ``….msg``; one hidden from
    the reader (an image shown in the HTML body) left out, as an inline part of an .eml is."""
    from extract_msg.attachments import BrokenAttachment
    from extract_msg.msg_classes import MSGFile

    for attachment in message.attachments:
        if getattr(attachment, "hidden", False):
            continue
        name = _one_line(attachment.name)
        data = attachment.data
        if isinstance(data, MSGFile) and not name.lower().endswith(".msg"):
            name = f"{name or 'message'}.msg"
        if not name:
            continue
        why = "damaged" if isinstance(attachment, BrokenAttachment) else "its data is not in the message"
        yield name, functools.partial(_attachment_data, data, why)


def _attachment_data(data: object, why: str) -> bytes:
    if not isinstance(data, bytes):
        raise SkipFile(why)
    return data


def _one_line(value: object) -> str:
    return " ".join(str(value).split()) if value else ""


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, TypeError, IndexError):  # a header the parser cannot make sense of
        value = None
    return _one_line(value)


def _heading(message: Message) -> str:
    return _titled(_header(message, "Subject"), _header(message, "Date"))


def _titled(subject: str, date: str) -> str:
    subject = subject or "(no subject)"
    return f"{subject} ({date})" if date else subject


def _body(message: Message, aside: dict[str, memoryview]) -> str:
    """The message's text. Of a plain and an HTML version, the plain one, unless it is a stub
    ("view this message in a browser") much shorter than the HTML's text."""
    if not isinstance(message, EmailMessage):
        return ""
    plain = _text(message.get_body(preferencelist=("plain",)), aside)
    html = _text(message.get_body(preferencelist=("html",)), aside)
    return _better(plain, html)


def _better(plain: str, html: str) -> str:
    """Of a message's plain text and its HTML, the plain text, unless it is a stub ("view this
    message in a browser") much shorter than the HTML's text."""
    html = parse_html(html).text if html else ""
    return html if len(html.strip()) > 1.5 * len(plain.strip()) else plain


def _attachments(message: Message) -> Iterator[tuple[str, Message]]:
    for part in message.walk():
        if part.get_content_disposition() == "attachment" and (name := part.get_filename()):
            yield " ".join(str(name).split()), part


def _read_attachment(name: str, data: Callable[[], bytes | None]) -> Document:
    """An attachment read by the loader of its format, from a temporary file: ``SkipFile`` when
    no loader reads its format (or it is mail itself: a message is not read inside another),
    when it is too large, or when its loader cannot read it. ``data`` gives its bytes, taken
    only once its format is known to be read."""
    from proxy.plugins import loader_for  # the plugin table imports this module

    suffix = Path(name).suffix.lower()
    load = loader_for(Path("attachment" + suffix)) if re.fullmatch(r"\.[\w.-]{1,16}", suffix) else None
    if load is None:
        raise SkipFile("not a format ragproxy reads")
    if load in (load_eml, load_mbox, load_msg):
        raise SkipFile("a message is not read inside another")
    content = data()
    if not content:
        raise SkipFile("empty")
    if len(content) > MAX_ATTACHMENT:
        raise SkipFile(f"{len(content) >> 20} MB, over the {MAX_ATTACHMENT >> 20} MB an attachment may have")
    with tempfile.TemporaryDirectory(prefix="ragproxy-attachment-") as folder:
        path = Path(folder) / ("attachment" + suffix)
        path.write_bytes(content)
        del content
        try:
            return load(path)
        except SkipFile:
            raise
        except Exception as exc:  # one bad attachment never stops the message
            raise SkipFile(f"{type(exc).__name__}: {exc}"[:200]) from None


def _text(part: Message | None, aside: dict[str, memoryview]) -> str:
    if not isinstance(part, EmailMessage):
        return ""
    raw = part.get_payload()
    if isinstance(raw, str) and raw.startswith(_ASIDE):
        data = _payload(part, aside) or b""
        try:
            return data.decode(part.get_content_charset() or "utf-8", errors="replace")
        except LookupError:  # an unknown charset
            return data.decode("utf-8", errors="replace")
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
    register(".mbox", load_mbox, large=True)
    register(".msg", load_msg)
