"""Outlook messages (.msg, [MS-OXMSG]) written for the tests: a compound file whose root storage
is the message. Its fixed-size properties (times, flags) sit in ``__properties_version1.0``;
each string or binary property is a stream of its own, ``__substg1.0_<id><type>``, with an entry
in that stream giving its size. Recipients and attachments are storages of their own, and an
attached message is a message storage inside its attachment's."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.cfb import Tree, write_cfb

PT_LONG, PT_BOOLEAN, PT_SYSTIME = 0x0003, 0x000B, 0x0040
PT_UNICODE, PT_BINARY, PT_OBJECT = 0x001F, 0x0102, 0x000D
READABLE_WRITABLE = 0x2 | 0x4
STORE_UNICODE_OK = 0x00040000
MSGFLAG_READ = 0x1
ATTACH_BY_VALUE, ATTACH_EMBEDDED_MSG = 1, 5
MAPI_TO, MAPI_CC = 1, 2
IMESSAGE_CLSID = bytes.fromhex("0B0D020000000000C000000000000046")  # the root's class in Outlook's files
CODEPAGES = {"utf-8": 65001, "gbk": 936, "cp1252": 1252}  # Windows' numbers of the HTML's charsets
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)

Value = int | datetime | str | bytes | dict[str, bytes | Tree]


@dataclass
class Mail:
    subject: str
    body: str | None = None
    html: str | None = None
    charset: str = "utf-8"  # the HTML's
    rtf: str | None = None  # compressed into PidTagRtfCompressed
    sender: tuple[str, str] | None = ("Ingrid Dahl", "ingrid@example.org")
    to: Sequence[tuple[str, str]] = (("Harbour keepers", "keepers@example.org"),)
    cc: Sequence[tuple[str, str]] = ()
    delivered: datetime | None = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    attachments: Sequence[tuple[str, bytes | Mail]] = field(default_factory=list)
    hidden: Sequence[str] = ()  # attachments hidden from the reader: images the HTML shows


def write_msg(path: Path, mail: Mail) -> None:
    path.write_bytes(write_cfb(_message(mail, top=True), clsid=IMESSAGE_CLSID))


def _message(mail: Mail, *, top: bool) -> dict[str, bytes | Tree]:
    props: dict[tuple[int, int], Value] = {
        (0x001A, PT_UNICODE): "IPM.Note",  # PidTagMessageClass
        (0x0037, PT_UNICODE): mail.subject,  # PidTagSubject
        (0x0E07, PT_LONG): MSGFLAG_READ,  # PidTagMessageFlags: read, sent (not unsent)
        (0x340D, PT_LONG): STORE_UNICODE_OK,  # PidTagStoreSupportMask: strings are UTF-16
    }
    if mail.body is not None:
        props[(0x1000, PT_UNICODE)] = mail.body  # PidTagBody
    if mail.html is not None:
        props[(0x1013, PT_BINARY)] = mail.html.encode(mail.charset)  # PidTagBodyHtml
        props[(0x3FDE, PT_LONG)] = CODEPAGES[mail.charset]  # PidTagInternetCodepage
    if mail.rtf is not None:
        import compressed_rtf

        props[(0x1009, PT_BINARY)] = compressed_rtf.compress(mail.rtf.encode("ascii"))  # PidTagRtfCompressed
    if mail.sender:
        name, address = mail.sender
        props[(0x0C1A, PT_UNICODE)] = name  # PidTagSenderName
        props[(0x0C1E, PT_UNICODE)] = "SMTP"  # PidTagSenderAddressType
        props[(0x0C1F, PT_UNICODE)] = address  # PidTagSenderEmailAddress
        props[(0x5D01, PT_UNICODE)] = address  # PidTagSenderSmtpAddress
    if mail.to:
        props[(0x0E04, PT_UNICODE)] = "; ".join(name for name, _ in mail.to)  # PidTagDisplayTo
    if mail.cc:
        props[(0x0E03, PT_UNICODE)] = "; ".join(name for name, _ in mail.cc)  # PidTagDisplayCc
    if mail.delivered:
        props[(0x0E06, PT_SYSTIME)] = mail.delivered  # PidTagMessageDeliveryTime
        props[(0x0039, PT_SYSTIME)] = mail.delivered  # PidTagClientSubmitTime
    recipients = [(MAPI_TO, r) for r in mail.to] + [(MAPI_CC, r) for r in mail.cc]
    # Reserved, the next recipient's and attachment's numbers, their counts; and at the top, 8
    # more reserved bytes
    count = len(recipients), len(mail.attachments)
    head = struct.pack("<8xIIII", *count, *count)
    tree: dict[str, bytes | Tree] = _properties(props, head + (bytes(8) if top else b""))
    if top:
        tree["__nameid_version1.0"] = {  # the named-property map: no named properties
            "__substg1.0_00020102": b"",  # GUIDs
            "__substg1.0_00030102": b"",  # entries
            "__substg1.0_00040102": b"",  # names
        }
    for number, (kind, (name, address)) in enumerate(recipients):
        tree[f"__recip_version1.0_#{number:08X}"] = _properties(
            {
                (0x0C15, PT_LONG): kind,  # PidTagRecipientType
                (0x3001, PT_UNICODE): name,  # PidTagDisplayName
                (0x3002, PT_UNICODE): "SMTP",  # PidTagAddressType
                (0x3003, PT_UNICODE): address,  # PidTagEmailAddress
                (0x39FE, PT_UNICODE): address,  # PidTagSmtpAddress
            },
            bytes(8),
        )
    for number, (name, content) in enumerate(mail.attachments):
        attachment: dict[tuple[int, int], Value] = {
            (0x3001, PT_UNICODE): name,  # PidTagDisplayName
            (0x0E21, PT_LONG): number,  # PidTagAttachNumber
        }
        if isinstance(content, Mail):  # named by its display name alone, as Outlook does
            attachment[(0x3705, PT_LONG)] = ATTACH_EMBEDDED_MSG  # PidTagAttachMethod
            attachment[(0x3701, PT_OBJECT)] = _message(content, top=False)  # PidTagAttachDataObject
        else:
            attachment[(0x3705, PT_LONG)] = ATTACH_BY_VALUE  # PidTagAttachMethod
            attachment[(0x3707, PT_UNICODE)] = name  # PidTagAttachLongFilename
            attachment[(0x3701, PT_BINARY)] = content  # PidTagAttachDataBinary
        if name in mail.hidden:
            attachment[(0x7FFE, PT_BOOLEAN)] = 1  # PidTagAttachmentHidden
        tree[f"__attach_version1.0_#{number:08X}"] = _properties(attachment, bytes(8))
    return tree


def _properties(props: dict[tuple[int, int], Value], head: bytes) -> dict[str, bytes | Tree]:
    """The property stream (``head``, then one 16-byte entry per property) and a stream for each
    string or binary property, a storage for an attached message."""
    streams: dict[str, bytes | Tree] = {}
    entries = bytearray(head)
    for (number, kind), value in sorted(props.items()):
        tag = (number << 16) | kind
        name = f"__substg1.0_{number:04X}{kind:04X}"
        if isinstance(value, dict):  # an attached message: its size is not counted
            streams[name] = value
            entries += struct.pack("<IIII", tag, READABLE_WRITABLE, 0xFFFFFFFF, 0)
        elif isinstance(value, str | bytes):
            data = value.encode("utf-16-le") if isinstance(value, str) else value
            streams[name] = data
            size = len(data) + (2 if isinstance(value, str) else 0)  # a string's counts its terminator
            entries += struct.pack("<IIII", tag, READABLE_WRITABLE, size, 0)
        elif isinstance(value, datetime):
            ticks = (value - _FILETIME_EPOCH) // timedelta(microseconds=1) * 10  # 100 ns each
            entries += struct.pack("<IIQ", tag, READABLE_WRITABLE, ticks)
        else:
            entries += struct.pack("<IIi4x", tag, READABLE_WRITABLE, int(value))
    return {"__properties_version1.0": bytes(entries), **streams}
