"""Schema changes as named migrations, applied once each, in order, each in its own transaction."""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.errors import ConfigError
from proxy.index import textsearch
from proxy.index.store.common import embedding_text
from proxy.index.store.sqlite.connection import Connection
from proxy.text import written_in_cjk


def m001_create_tables(db: Connection) -> None:
    db.execute("""CREATE TABLE collections (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        root TEXT NOT NULL)""")
    db.execute("""CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime REAL NOT NULL,
        loader TEXT NOT NULL,
        indexed_at REAL NOT NULL,
        UNIQUE (collection_id, path))""")
    db.execute("""CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL,
        text TEXT NOT NULL,
        start INTEGER NOT NULL,
        end INTEGER NOT NULL,
        heading TEXT,
        page INTEGER,
        content_hash TEXT NOT NULL,
        embedded INTEGER NOT NULL DEFAULT 0)""")
    db.execute("CREATE INDEX chunks_by_document ON chunks(document_id)")
    db.execute("CREATE INDEX chunks_pending ON chunks(embedded) WHERE embedded = 0")
    # Contentless: the text lives in `chunks`; rows are deleted by rowid (= chunks.id).
    db.execute("""CREATE VIRTUAL TABLE chunks_fts USING fts5(
        body, content='', contentless_delete=1, tokenize='porter unicode61 remove_diacritics 2')""")
    db.execute("""CREATE TABLE embedding_cache (
        model TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (model, content_hash)) WITHOUT ROWID""")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("""CREATE TABLE skipped (
        collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        reason TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (collection_id, path))""")


def m002_embedding_cache_rowid(db: Connection) -> None:
    """Vectors (1.5 KB) are too large for a WITHOUT ROWID table, whose rows should stay under a
    twentieth of a page: they spilled onto overflow pages and tripled the file."""
    db.execute("""CREATE TABLE embedding_cache_new (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        vector BLOB NOT NULL,
        UNIQUE (model, content_hash))""")
    db.execute(
        "INSERT INTO embedding_cache_new(model, content_hash, vector) "
        "SELECT model, content_hash, vector FROM embedding_cache"
    )
    db.execute("DROP TABLE embedding_cache")
    db.execute("ALTER TABLE embedding_cache_new RENAME TO embedding_cache")


def m003_chunks_by_content_hash(db: Connection) -> None:
    """Pruning the embedding cache looks chunks up by content hash."""
    db.execute("CREATE INDEX chunks_by_content_hash ON chunks(content_hash)")


def m004_collection_totals(db: Connection) -> None:
    """Each collection's chunks and their tokens (as FTS5 counts them): BM25 over some collections
    needs their count and mean length, not the whole table's. Kept by the store as it writes."""
    db.execute("""CREATE TABLE collection_totals (
        collection_id INTEGER PRIMARY KEY,
        chunks INTEGER NOT NULL,
        tokens INTEGER NOT NULL)""")
    db.execute("""INSERT INTO collection_totals
        SELECT d.collection_id, count(*), coalesce(sum(fts5_tokens(s.sz)), 0)
        FROM chunks c JOIN documents d ON d.id = c.document_id
        LEFT JOIN chunks_fts_docsize s ON s.id = c.id
        GROUP BY d.collection_id""")


def m005_chunk_script(db: Connection) -> None:
    """Each chunk's script, told by its prose (``written_in_cjk``) once, as the chunk is written,
    and kept: the matrix read it from the text's bytes at every load, but a look at the prose
    of every chunk would cost seconds a load at 100k chunks."""
    db.execute("ALTER TABLE chunks ADD COLUMN cjk INTEGER NOT NULL DEFAULT 0")
    db.create_function("ragproxy_written_in_cjk", 1, written_in_cjk, deterministic=True)
    db.execute("UPDATE chunks SET cjk = ragproxy_written_in_cjk(text)")


def m006_hanzi_folded(db: Connection) -> None:
    """The keyword index holds a Traditional Chinese character as its Simplified one
    (``textsearch.fold``): each chunk with such a character is indexed again. The chunks' token
    counts, and so the collections' totals, stay as they were: a character folds to one."""
    rows = db.execute("SELECT id, text, heading FROM chunks")
    while batch := rows.fetchmany(1000):  # the FTS table is written as the chunks are read
        bodies = [(chunk_id, embedding_text(text, heading)) for chunk_id, text, heading in batch]
        changed = [(chunk_id, body) for chunk_id, body in bodies if textsearch.fold(body) != body]
        if not changed:
            continue
        db.executemany("DELETE FROM chunks_fts WHERE rowid = ?", [(chunk_id,) for chunk_id, _ in changed])
        keywords = textsearch.index_texts([body for _, body in changed])
        db.executemany(
            "INSERT INTO chunks_fts(rowid, body) VALUES (?, ?)",
            [(chunk_id, text) for (chunk_id, _), text in zip(changed, keywords, strict=True)],
        )


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_create_tables", m001_create_tables),
    ("m002_embedding_cache_rowid", m002_embedding_cache_rowid),
    ("m003_chunks_by_content_hash", m003_chunks_by_content_hash),
    ("m004_collection_totals", m004_collection_totals),
    ("m005_chunk_script", m005_chunk_script),
    ("m006_hanzi_folded", m006_hanzi_folded),
]


def migrate(db: Connection) -> list[str]:
    """Applies what is missing; returns the names applied."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    applied = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    done = []
    for name, step in MIGRATIONS:
        if name in applied:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            step(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        done.append(name)
    return done


def check_schema(db: Connection, path: object) -> None:
    """For a read-only open: the file is a ragproxy index with every migration applied."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "_migrations" not in tables:
        raise ConfigError(
            f"{path} is not a ragproxy index: point --db at the index file, or build one with "
            "'ragproxy index DIR'"
        )
    applied = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    if any(name not in applied for name, _ in MIGRATIONS):
        raise ConfigError(
            f"the index at {path} was made by an older ragproxy: update it with 'ragproxy index DIR' "
            "or 'ragproxy serve --docs DIR'"
        )
