"""Opening the index database: one function sets every connection up the same way.

The driver is ``sqlean.py``, a drop-in ``sqlite3`` module with a current SQLite (3.50): the
standard library's ``sqlite3`` in many Python builds (pyenv, macOS system Python) cannot load
extensions at all, ``pysqlite3-binary`` has Linux x86_64 wheels only, and ``apsw`` has its own
non-DB-API interface. sqlean ships wheels for Linux, macOS and Windows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlean
import sqlite_vec

Connection = Any  # sqlean.Connection, which mirrors sqlite3.Connection but ships no type hints
Error = sqlean.Error
IntegrityError = sqlean.IntegrityError


def connect(path: str | Path, *, readonly: bool = False) -> Connection:
    """A connection with sqlite-vec loaded, WAL, a busy timeout and foreign keys on. Transactions
    are explicit (``BEGIN IMMEDIATE`` for writes)."""
    if readonly:
        conn = sqlean.connect(
            f"file:{Path(path)}?mode=ro", uri=True, timeout=30, isolation_level=None, check_same_thread=False
        )
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlean.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)
    conn.row_factory = sqlean.Row
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.create_function("fts5_tokens", 1, fts5_tokens, deterministic=True)
    return conn


def fts5_tokens(size: bytes | None) -> int:
    """A row's token count from FTS5's ``docsize`` table (its ``sz``: a varint per column, SQLite's
    form, big-endian 7 bits a byte; one column here)."""
    value = 0
    for i, byte in enumerate((size or b"")[:9]):
        if i == 8:
            return (value << 8) | byte
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            break
    return value


def database_message(path: Path, exc: Exception) -> str:
    """What is wrong with the index file and what to do, in one line."""
    return (
        f"the index at {path} cannot be read ({str(exc) or type(exc).__name__}): check that this user "
        "may read and write it; if it is damaged, move it aside and rebuild it with "
        "'ragproxy index DIR' (or 'ragproxy serve --docs DIR')"
    )
