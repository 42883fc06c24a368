"""Reading files without waiting on what is not a regular file: a FIFO, socket or device is
refused rather than opened."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from proxy.index.store import content_hasher


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, at most ``limit``. Anything else (a FIFO, socket or device,
    even one named ``.gitignore``) is refused without waiting on it: opening a FIFO blocks
    until a writer comes, and reading a device may never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read(limit)
    finally:
        os.close(fd)


def hash_regular(path: Path, block: int = 1 << 20) -> str:
    """``content_hash`` of a regular file of any size, read a block at a time (``read_regular``'s
    refusals apply)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        digest = content_hasher()
        with os.fdopen(fd, "rb", closefd=False) as file:
            while data := file.read(block):
                digest.update(data)
        return digest.hexdigest()
    finally:
        os.close(fd)
