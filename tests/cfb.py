"""A compound file ([MS-CFB] version 3: 512-byte sectors) written from a tree of storages and
streams, for the tests: an Outlook message is one, and no library writes them.

Streams under 4,096 bytes live in the mini stream (64-byte mini sectors, chained by the mini FAT);
larger ones in sectors of their own, chained by the FAT. Each storage's children form a red-black
tree ordered by name length, then upper-case name: a balanced binary search tree, its deepest
level red when that level is not full and every other node black, so every path from the root
to a leaf passes the same number of black nodes."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

SECTOR = 512
MINI_SECTOR = 64
MINI_CUTOFF = 4096
FREESECT = 0xFFFFFFFF
ENDOFCHAIN = 0xFFFFFFFE
FATSECT = 0xFFFFFFFD
NOSTREAM = 0xFFFFFFFF
SIGNATURE = bytes.fromhex("D0CF11E0A1B11AE1")
STORAGE, STREAM, ROOT = 1, 2, 5
RED, BLACK = 0, 1
_PER_SECTOR = SECTOR // 4  # sector numbers in a FAT or mini FAT sector
_HEADER_FAT = 109  # FAT sectors the header lists; more would need DIFAT sectors

Tree = Mapping[str, Union[bytes, "Tree"]]  # a stream's bytes, or a storage's own tree


@dataclass
class _Entry:
    name: str
    kind: int
    data: bytes = b""
    clsid: bytes = bytes(16)
    left: int = NOSTREAM
    right: int = NOSTREAM
    child: int = NOSTREAM
    colour: int = BLACK
    start: int = ENDOFCHAIN
    size: int = 0
    depth: int = 0
    children: list[int] = field(default_factory=list)

    def packed(self) -> bytes:
        name = self.name.encode("utf-16-le") + b"\0\0"
        return struct.pack(
            "<64sHBBIII16sIQQIQ",
            name,
            len(name),
            self.kind,
            self.colour,
            self.left,
            self.right,
            self.child,
            self.clsid,
            0,  # state bits
            0,  # creation time
            0,  # modification time
            self.start,
            self.size,
        )


_UNUSED = struct.pack(
    "<64sHBBIII16sIQQIQ", b"", 0, 0, 0, NOSTREAM, NOSTREAM, NOSTREAM, bytes(16), 0, 0, 0, 0, 0
)


def write_cfb(tree: Tree, clsid: bytes = bytes(16)) -> bytes:
    """The compound file holding ``tree``; ``clsid`` is the root storage's class."""
    entries = [_Entry("Root Entry", ROOT, clsid=clsid)]
    _add(entries, 0, tree)

    # Streams' places: small ones in the mini stream, the others in sectors of their own
    mini_stream = bytearray()
    mini_fat: list[int] = []
    big: list[_Entry] = []
    for entry in entries:
        if entry.kind != STREAM or not entry.data:
            continue
        entry.size = len(entry.data)
        if entry.size < MINI_CUTOFF:
            count = -(-entry.size // MINI_SECTOR)
            entry.start = len(mini_fat)
            mini_fat += [len(mini_fat) + i + 1 for i in range(count - 1)] + [ENDOFCHAIN]
            mini_stream += entry.data.ljust(count * MINI_SECTOR, b"\0")
        else:
            big.append(entry)

    directory_sectors = -(-(len(entries) * 128) // SECTOR)
    mini_fat_sectors = -(-len(mini_fat) // _PER_SECTOR)
    mini_stream_sectors = -(-len(mini_stream) // SECTOR)
    big_sectors = [-(-len(e.data) // SECTOR) for e in big]
    others = directory_sectors + mini_fat_sectors + mini_stream_sectors + sum(big_sectors)
    fat_sectors = 1
    while fat_sectors * _PER_SECTOR < fat_sectors + others:
        fat_sectors += 1
    if fat_sectors > _HEADER_FAT:
        raise ValueError("too large for a compound file without DIFAT sectors")

    # Sectors in order: FAT, directory, mini FAT, mini stream, large streams
    fat = [FATSECT] * fat_sectors

    def chain(count: int) -> int:
        first = len(fat)
        fat.extend(first + i + 1 for i in range(count - 1))
        fat.append(ENDOFCHAIN)
        return first

    first_directory = chain(directory_sectors)
    first_mini_fat = chain(mini_fat_sectors) if mini_fat_sectors else ENDOFCHAIN
    root = entries[0]
    if mini_stream:
        root.start, root.size = chain(mini_stream_sectors), len(mini_stream)
    for entry, count in zip(big, big_sectors, strict=True):
        entry.start = chain(count)
    fat += [FREESECT] * (fat_sectors * _PER_SECTOR - len(fat))
    mini_fat += [FREESECT] * (mini_fat_sectors * _PER_SECTOR - len(mini_fat))

    directory = root.packed() + b"".join(e.packed() for e in entries[1:])
    directory += _UNUSED * (directory_sectors * SECTOR // 128 - len(entries))
    body = [
        struct.pack(f"<{len(fat)}I", *fat),
        directory,
        struct.pack(f"<{len(mini_fat)}I", *mini_fat),
        _padded(bytes(mini_stream)),
        *(_padded(e.data) for e in big),
    ]
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        SIGNATURE,
        bytes(16),
        0x003E,  # minor version
        0x0003,  # major version: 512-byte sectors
        0xFFFE,  # byte order: little-endian
        9,  # sector shift: 512
        6,  # mini sector shift: 64
        bytes(6),
        0,  # directory sectors: always 0 in version 3
        fat_sectors,
        first_directory,
        0,  # transaction signature
        MINI_CUTOFF,
        first_mini_fat,
        mini_fat_sectors,
        ENDOFCHAIN,  # first DIFAT sector: none
        0,  # DIFAT sectors
    )
    difat = list(range(fat_sectors)) + [FREESECT] * (_HEADER_FAT - fat_sectors)
    header += struct.pack(f"<{_HEADER_FAT}I", *difat)
    return header + b"".join(body)


def _padded(data: bytes) -> bytes:
    return data.ljust(-(-len(data) // SECTOR) * SECTOR, b"\0")


def _add(entries: list[_Entry], storage: int, tree: Tree) -> None:
    for name, value in tree.items():
        if len(name) > 31 or any(c in name for c in "/\\:!"):
            raise ValueError(f"not a compound file entry name: {name!r}")
        index = len(entries)
        entries[storage].children.append(index)
        if isinstance(value, Mapping):
            entries.append(_Entry(name, STORAGE, start=0))
            _add(entries, index, value)
        else:
            entries.append(_Entry(name, STREAM, bytes(value)))
    entries[storage].child = _red_black(entries, entries[storage].children)


def _key(name: str) -> tuple[int, str]:
    """The order of siblings: a shorter name first, then by upper-case name."""
    return len(name.encode("utf-16-le")), name.upper()


def _red_black(entries: list[_Entry], children: list[int]) -> int:
    ordered = sorted(children, key=lambda i: _key(entries[i].name))
    if len({_key(entries[i].name) for i in ordered}) != len(ordered):
        raise ValueError("two entries of one storage have the same name")

    def balanced(items: list[int], depth: int) -> int:
        if not items:
            return NOSTREAM
        middle = len(items) // 2
        node = entries[items[middle]]
        node.depth = depth
        node.left = balanced(items[:middle], depth + 1)
        node.right = balanced(items[middle + 1 :], depth + 1)
        return items[middle]

    top = balanced(ordered, 0)
    # Every leaf of a tree split at the middle is on its deepest level or the one above: black
    # nodes above the deepest level, red ones on it, give every path as many black nodes
    deepest = max((entries[i].depth for i in ordered), default=0)
    for index in ordered:
        entries[index].colour = RED if entries[index].depth == deepest > 0 else BLACK
    return top
