"""The team engine: the index in PostgreSQL with pgvector, shared by several ragproxy replicas.

- ``schema``: the tables, triggers and vector log, as named migrations;
- ``store``: ``PostgresStore``;
- ``keywords``: the keyword search: the ``tsvector`` a chunk is stored as, a term's count read
  back from ``ts_rank``, BM25 as FTS5 computes it;
- ``vector_stats``: each replica's statistics of the vectors, for the relevance gate;
- ``listener``: the thread that hears of the other replicas' changes (``LISTEN``/``NOTIFY``).

psycopg is imported here: ``open_store`` imports this package only for a ``postgresql://`` URL."""

from proxy.index.store.postgres.store import PostgresStore, masked

__all__ = ["PostgresStore", "masked"]
