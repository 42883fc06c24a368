"""The embedded engine: the index in one SQLite file, with FTS5 for keywords and sqlite-vec for
vectors.

- ``connection``: every connection set up alike (sqlite-vec loaded, WAL, busy timeout);
- ``migrations``: the schema, as named migrations;
- ``store``: ``SqliteStore``, one writer behind a lock, a read connection per thread;
- ``keywords``: the keyword search, and FTS5's vocabulary, which chooses a question's terms;
- ``bm25``: BM25 over some collections with their own statistics;
- ``matrix``: the vectors in memory, which the vector search scans."""

from proxy.index.store.sqlite.connection import Connection, Error, IntegrityError, connect, database_message
from proxy.index.store.sqlite.store import SqliteStore

__all__ = ["Connection", "Error", "IntegrityError", "SqliteStore", "connect", "database_message"]
