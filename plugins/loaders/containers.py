"""Zip containers (.docx, .pptx, .xlsx, .odt, .ods, .odp, .epub): their central directory says how
large each member inflates to, and Python's zipfile never reads a member past that size, so a
look at the directory before a library opens the file turns a decompression bomb away in
milliseconds instead of letting it fill the reader's memory."""

from __future__ import annotations

import zipfile
from pathlib import Path

from proxy.types import SkipFile

MAX_INFLATED = 256 * 1024 * 1024  # bytes, all members together
MAX_RATIO = 100  # inflated / packed, for a member that inflates past RATIO_FLOOR
RATIO_FLOOR = 16 * 1024 * 1024
MAX_MEMBERS = 20_000
# An Office file saved with a password is an encrypted package inside an OLE compound file, not a
# zip; so is a document of Office 97-2003 (.doc, .ppt, .xls) under a new name
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")
_LOOK = 16 * 1024 * 1024  # bytes of each end of an OLE file searched for the encrypted package
LEGACY = {"DOCX": ".doc", "PPTX": ".ppt", "XLSX": ".xls", "XLSM": ".xls"}


def refuse_ole(path: Path, kind: str) -> None:
    """``SkipFile`` when ``path`` is an OLE compound file: a password-protected Office file or a
    legacy one renamed. Its directory names its streams; a huge file is searched at both ends."""
    with path.open("rb") as file:
        if file.read(len(OLE_MAGIC)) != OLE_MAGIC:
            return
        data = file.read(_LOOK)
        start = file.tell()
        end = file.seek(0, 2)
        if end > start:  # the rest, at most its last _LOOK bytes
            file.seek(max(start, end - _LOOK))
            data += file.read()
    if ENCRYPTED_PACKAGE in data:
        raise SkipFile(f"password-protected {kind} (an encrypted Office file): not read")
    legacy = LEGACY.get(kind, "Office 97-2003 file")
    raise SkipFile(f"unreadable {kind}: an OLE file, not a zip (a legacy {legacy} under a new name?)")


def check_zip(
    path: Path,
    kind: str,
    *,
    max_inflated: int = MAX_INFLATED,
    max_ratio: int = MAX_RATIO,
    exempt: tuple[str, ...] = (),
) -> None:
    """Raises ``SkipFile`` when ``path`` is not a zip file, or would inflate past ``max_inflated``
    bytes, or holds a member of more than ``RATIO_FLOOR`` bytes packed more than ``max_ratio``
    times over. Members whose names start with one of ``exempt`` (a spreadsheet's sheets, which
    its loader streams) count towards neither limit. An OLE file is refused first
    (``refuse_ole``)."""
    refuse_ole(path, kind)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise SkipFile(f"unreadable {kind}: {type(exc).__name__}: {exc}"[:300]) from None
    if len(members) > MAX_MEMBERS:
        raise SkipFile(f"{kind} holds {len(members)} files, over the {MAX_MEMBERS} a document may hold")
    counted = [m for m in members if not m.filename.startswith(exempt)] if exempt else members
    inflated = sum(m.file_size for m in counted)
    if inflated > max_inflated:
        raise SkipFile(
            f"{kind} inflates to {inflated >> 20} MB, over the {max_inflated >> 20} MB limit "
            "(a decompression bomb?)"
        )
    for member in counted:
        if member.file_size > RATIO_FLOOR and member.file_size > max_ratio * max(1, member.compress_size):
            raise SkipFile(
                f"{kind} member {member.filename} inflates {member.file_size // max(1, member.compress_size)}"
                f" times over, to {member.file_size >> 20} MB (a decompression bomb?)"
            )
