"""``PostgresStore``: the index in PostgreSQL with pgvector, shared by several ragproxy replicas.

The same store as the SQLite file, on a server: documents, chunks, the embedding cache, keyword
search (PostgreSQL full-text search: a ``tsvector`` per chunk with a GIN index) and vector search
(a ``vector`` column with an HNSW index). What differs, and why:

- **Keywords.** PostgreSQL's parser keeps a run of Chinese characters as one word, so chunks are
  split here exactly as the SQLite path splits them (``textsearch.tokens``: each CJK character a
  token, English stemmed by PostgreSQL's snowball stemmer) and stored as a ``tsvector`` with
  positions; a Chinese pair is a phrase (``'熊' <-> '猫'``). Matching rows are found through the
  GIN index and scored with BM25 as FTS5 scores them (k1 1.2, b 0.75; the statistics of the whole
  index, or of the collections a search is limited to: ``collection_totals``),
  so both engines rank alike.
- **Replicas.** Exactly one process indexes a collection at a time: it holds the collection's
  advisory lock (``claim_collection``), which PostgreSQL frees when its session ends, so another
  replica takes over. Every change to the vectors is logged (a trigger, in the same transaction:
  ``schema``) and announced (``NOTIFY ragproxy_vectors``); each replica keeps the relevance gate's
  statistics (the moments of its vectors, per collection and script) current from that log
  (``vector_stats``), woken by its listener (``listener``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
from psycopg.rows import dict_row

from proxy.errors import ConfigError
from proxy.index import textsearch
from proxy.index.store.common import (
    Hit,
    NewDocument,
    PendingChunk,
    ThreadReader,
    embedding_text,
)
from proxy.index.store.postgres.keywords import KeywordSearch, tsvector_text
from proxy.index.store.postgres.schema import (
    CHANNEL,
    LOCK_SPACE,
    VECTOR_LOG_LOCK,
    check_schema,
    has_vectors,
    meta_value,
    migrate,
)
from proxy.index.store.postgres.vector_stats import VectorStats, prune_log
from proxy.index.store.sql import embedder_mismatch
from proxy.index.store.terms import KeptFrequencies
from proxy.index.vectors import Background, unit
from proxy.text import written_in_cjk

# HNSW candidates per search (the default, 40, is below the pool of 50). At 100k e5-shaped vectors:
# recall@10 / @50 0.981 / 0.947 against exact search; 200: 0.963 / 0.898; 800: 0.991 / 0.973 at
# 1.7x the time (BENCHMARKS.md). On SciFact's real vectors 200 already matched exact search.
EF_SEARCH = 400


class PostgresStore(KeywordSearch):
    MARK = "%s"
    CHUNK_COLLECTION = "c.collection_id"  # chunks hold their collection: a search filters them alone

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        """``readonly``: the schema must exist and be current; nothing is created or migrated."""
        self.url = url
        self.readonly = readonly
        self._writer = self._connect(autocommit=False)
        try:
            check_schema(self._writer, self.where) if readonly else migrate(self._writer)
        except BaseException:
            self._writer.close()
            raise
        super().__init__()
        self._claims: psycopg.Connection[Any] | None = None  # the session holding our advisory locks
        self._claimed: set[int] = set()
        self._stems: dict[str, str] = {}
        self._frequencies = KeptFrequencies()
        self._stats = VectorStats(self._connect, self.reader)
        self._vector_table = False  # chunk_vectors seen: it exists from the first embedder on

    @property
    def where(self) -> str:
        """The URL without its password, for messages and ``status``."""
        return masked(self.url)

    def _connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.url, autocommit=autocommit, row_factory=dict_row)
        except psycopg.OperationalError as exc:
            raise ConfigError(f"cannot connect to the index database {self.where}: {exc}".strip()) from exc
        return conn

    def close(self) -> None:
        self._stats.stop()
        with self._lock:
            if self._claims is not None:
                self._claims.close()  # frees the advisory locks
            super().close()

    # -- connections ---------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock, self._writer.transaction():
            yield self._writer

    def reader(self) -> psycopg.Connection[Any]:
        reader = getattr(self._local, "reader", None)
        if reader is None or reader.conn.closed:
            conn = self._connect()
            conn.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
            conn.execute("SET hnsw.iterative_scan = relaxed_order")  # a collection filter still finds k
            reader = self._local.reader = ThreadReader(conn)
            with self._lock:
                self._readers.add(reader)
        held: psycopg.Connection[Any] = reader.conn
        return held

    @staticmethod
    def member(column: str, ids: Sequence[int]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(%s)", [list(ids)]

    # -- collections and documents --------------------------------------------------------------
    def collection_id(self, name: str, root: str, *, move: bool = False) -> int:
        with self.write() as db:
            db.execute(
                "INSERT INTO collections(name, root) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                (name, root),
            )
            row = db.execute(
                "SELECT id, root FROM collections WHERE name = %s FOR UPDATE", (name,)
            ).fetchone()
            assert row is not None
            return self._keep_root(db, row, name, root, move)

    def replace_documents(self, collection_id: int, documents: Sequence[NewDocument]) -> list[int]:
        """Several documents in one transaction; their chunks go in with one COPY."""
        latest = {document.path: document for document in documents}
        rows: list[tuple[Any, ...]] = []
        for document in latest.values():
            for chunk, digest in zip(document.chunks, document.hashes, strict=True):
                body = embedding_text(chunk.text, chunk.heading)
                length, keywords = self._keywords(body)
                cjk = written_in_cjk(chunk.text)
                rows.append((document.path, chunk, digest, cjk, length, keywords))
        with self.write() as db:
            ids = {
                path: self._replace_document_row(db, collection_id, path, document)
                for path, document in latest.items()
            }
            with db.cursor().copy(
                'COPY chunks (document_id, collection_id, ordinal, text, start, "end", heading, page, '
                "content_hash, cjk, tokens, keywords) FROM STDIN"
            ) as copy:
                for path, chunk, digest, cjk, length, keywords in rows:
                    copy.write_row(
                        (
                            ids[path],
                            collection_id,
                            chunk.ordinal,
                            chunk.text,
                            chunk.start,
                            chunk.end,
                            chunk.heading,
                            chunk.page,
                            digest,
                            cjk,
                            length,
                            keywords,
                        )
                    )
        return [ids[document.path] for document in documents]

    def _replace_document_row(
        self, db: psycopg.Connection[Any], collection_id: int, path: str, document: NewDocument
    ) -> int:
        fields = (document.digest, document.size, document.mtime, document.loader, time.time())
        db.execute("DELETE FROM skipped WHERE collection_id = %s AND path = %s", (collection_id, path))
        row = db.execute(
            "INSERT INTO documents(collection_id, path, content_hash, size, mtime, loader, indexed_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (collection_id, path) DO UPDATE SET "
            "content_hash = excluded.content_hash, size = excluded.size, mtime = excluded.mtime, "
            "loader = excluded.loader, indexed_at = excluded.indexed_at RETURNING id",
            (collection_id, path, *fields),
        ).fetchone()
        assert row is not None
        db.execute("DELETE FROM chunks WHERE document_id = %s", (row["id"],))
        return int(row["id"])

    def _keywords(self, text: str) -> tuple[int, str]:
        """The text's token count and its ``tsvector`` (as text)."""
        tokens = textsearch.tokens(text)
        return len(tokens), tsvector_text(tokens, self._stem(tokens))

    def move_document(self, collection_id: int, old: str, new: str) -> bool:
        with self.write() as db:
            db.execute("DELETE FROM skipped WHERE collection_id = %s AND path = %s", (collection_id, new))
            db.execute("DELETE FROM documents WHERE collection_id = %s AND path = %s", (collection_id, new))
            moved = db.execute(
                "UPDATE documents SET path = %s WHERE collection_id = %s AND path = %s",
                (new, collection_id, old),
            ).rowcount
            return bool(moved)

    def delete_documents(self, collection_id: int, paths: Iterable[str]) -> int:
        """The documents, their chunks and vectors (by cascade), and their skip records."""
        wanted = list(paths)
        if not wanted:
            return 0
        with self.write() as db:
            db.execute(
                "DELETE FROM skipped WHERE collection_id = %s AND path = ANY(%s)", (collection_id, wanted)
            )
            deleted = db.execute(
                "DELETE FROM documents WHERE collection_id = %s AND path = ANY(%s)", (collection_id, wanted)
            ).rowcount
            prune_log(db)
            return int(deleted)

    def record_skip(self, collection_id: int, path: str, reason: str) -> None:
        with self.write() as db:
            db.execute("DELETE FROM documents WHERE collection_id = %s AND path = %s", (collection_id, path))
            self._record_skip_row(db, collection_id, path, reason, time.time())

    # -- who indexes ----------------------------------------------------------------------------
    def claim_collection(self, collection_id: int) -> bool:
        """True if this process holds the collection's advisory lock (taken now, or before and
        still held). The lock lives with one session: if this process dies, PostgreSQL frees it
        and another replica's claim succeeds."""
        with self._lock:
            if self._claims is not None:
                try:
                    self._claims.execute("SELECT 1")
                except psycopg.Error:  # the session is gone, and our locks with it
                    self._claims.close()
                    self._claims, self._claimed = None, set()
            if collection_id in self._claimed:
                return True
            if self._claims is None:
                self._claims = self._connect()
            row = self._claims.execute(
                "SELECT pg_try_advisory_lock(%s, %s) AS held", (LOCK_SPACE, collection_id)
            ).fetchone()
            if row is not None and row["held"]:
                self._claimed.add(collection_id)
                return True
            return False

    def release_collection(self, collection_id: int) -> None:
        with self._lock:
            if collection_id in self._claimed and self._claims is not None:
                self._claims.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, collection_id))
                self._claimed.discard(collection_id)

    # -- embeddings -----------------------------------------------------------------------------
    def bind_embedder(self, name: str, dim: int, *, on_change: str = "reembed") -> bool:
        with self.write() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (VECTOR_LOG_LOCK,))
            meta = {
                r["key"]: r["value"]
                for r in db.execute("SELECT key, value FROM meta WHERE key IN ('embedder', 'dim')")
            }
            if meta.get("embedder") == name and meta.get("dim") == str(dim) and has_vectors(db):
                return False
            changed = "embedder" in meta
            if changed and on_change == "refuse":
                raise embedder_mismatch(f"the index in {self.where}", meta, name)
            db.execute("DROP TABLE IF EXISTS chunk_vectors")
            db.execute(f"""CREATE TABLE chunk_vectors (
                chunk_id bigint PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
                collection_id bigint NOT NULL,
                cjk boolean NOT NULL,
                embedding vector({int(dim)}) NOT NULL)""")
            db.execute(
                "CREATE INDEX chunk_vectors_hnsw ON chunk_vectors USING hnsw (embedding vector_cosine_ops)"
            )
            for event, table in (("INSERT", "NEW"), ("DELETE", "OLD")):
                db.execute(f"""CREATE TRIGGER chunk_vectors_{event.lower()} AFTER {event} ON chunk_vectors
                    REFERENCING {table} TABLE AS changed FOR EACH STATEMENT
                    EXECUTE FUNCTION ragproxy_log_vectors()""")
            db.execute("UPDATE chunks SET embedded = false")
            db.execute("DELETE FROM vector_changes")
            epoch = int(meta_value(db, "vectors_epoch") or 0) + 1
            for key, value in (("embedder", name), ("dim", str(dim)), ("vectors_epoch", str(epoch))):
                db.execute(
                    "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            db.execute(f"NOTIFY {CHANNEL}")
            return changed

    def pending_chunks(self, limit: int) -> list[PendingChunk]:
        """Chunks without vectors, but for collections another process indexes: the replica that
        holds a collection embeds it (two embedding the same text would only waste the work)."""
        db = self.reader()
        rows = db.execute(
            "SELECT id, collection_id, content_hash, text, heading, cjk FROM chunks "
            "WHERE NOT embedded AND NOT collection_id = ANY(%s) ORDER BY id LIMIT %s",
            (self._claimed_elsewhere(db), limit),
        )
        return [
            PendingChunk(
                r["id"],
                r["collection_id"],
                r["content_hash"],
                embedding_text(r["text"], r["heading"]),
                r["cjk"],
            )
            for r in rows
        ]

    def _claimed_elsewhere(self, db: psycopg.Connection[Any]) -> list[int]:
        """The collections whose advisory lock another session holds."""
        with self._lock:
            ours = self._claims.info.backend_pid if self._claims is not None else 0
        rows = db.execute(
            "SELECT objid::bigint AS id FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s::bigint::oid AND objsubid = 2 AND pid <> %s",
            (LOCK_SPACE, ours),
        )
        return [int(row["id"]) for row in rows]

    def cached_vectors(self, model: str, hashes: Iterable[str]) -> dict[str, bytes]:
        rows = self.reader().execute(
            "SELECT content_hash, vector FROM embedding_cache WHERE model = %s AND content_hash = ANY(%s)",
            (model, list(set(hashes))),
        )
        return {row["content_hash"]: bytes(row["vector"]) for row in rows}

    def store_vectors(self, model: str, items: Sequence[tuple[PendingChunk, bytes]]) -> int:
        """Vectors for the chunks that still exist unchanged, in one statement."""
        if not items:
            return 0
        with self.write() as db:
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO embedding_cache VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    [(model, chunk.content_hash, vector) for chunk, vector in items],
                )
            written = db.execute(
                """WITH fresh AS (
                    UPDATE chunks c SET embedded = true
                    FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS x(id, hash, collection_id)
                    WHERE c.id = x.id AND c.content_hash = x.hash AND c.collection_id = x.collection_id
                      AND NOT c.embedded
                    RETURNING c.id, c.collection_id, c.cjk)
                INSERT INTO chunk_vectors(chunk_id, collection_id, cjk, embedding)
                SELECT fresh.id, fresh.collection_id, fresh.cjk, v.embedding::vector
                FROM fresh JOIN unnest(%s::bigint[], %s::text[]) AS v(id, embedding) ON v.id = fresh.id""",
                (
                    [chunk.chunk_id for chunk, _ in items],
                    [chunk.content_hash for chunk, _ in items],
                    [chunk.collection_id for chunk, _ in items],
                    [chunk.chunk_id for chunk, _ in items],
                    [vector_text(vector) for _, vector in items],
                ),
            ).rowcount
            if written:
                prune_log(db)
        return int(written)

    # -- vector search ----------------------------------------------------------------------------
    def scan_vectors(
        self,
        vector: Sequence[float],
        k: int = 10,
        collections: Sequence[str] | None = None,
        cjk: bool | None = None,
    ) -> tuple[list[Hit], Background | None]:
        """Nearest neighbours through the HNSW index (cosine), and the query's similarity to the
        chunks searched, from this replica's statistics."""
        chosen = self._collection_ids(collections)
        db = self.reader()
        if chosen == [] or not self._vectors_exist(db):
            return [], None
        q = unit(vector)
        literal = vector_text(q.tobytes())
        found = self._stats.background(q, set(chosen) if chosen is not None else None, cjk)
        scripts = [None] if found is None or found.other is None else [cjk, not cjk]
        scores: dict[int, float] = {}
        for script in scripts:  # each script's nearest, when both are ranked (``vectors.by_script``)
            rows = db.execute(
                "SELECT chunk_id, 1 - (embedding <=> %s::vector) AS score FROM chunk_vectors WHERE true "
                + ("AND collection_id = ANY(%s) " if chosen is not None else "")
                + ("AND cjk = %s " if script is not None else "")
                + "ORDER BY embedding <=> %s::vector LIMIT %s",
                (
                    literal,
                    *([chosen] if chosen is not None else []),
                    *([script] if script is not None else []),
                    literal,
                    k,
                ),
            ).fetchall()
            scores.update((row["chunk_id"], float(row["score"])) for row in rows)
        hits = self._hits(scores)
        if found is not None and found.other is not None:
            hits.sort(key=lambda hit: -found.of(hit.cjk == cjk).z(hit.score))
            return hits[:k], found
        return sorted(hits, key=lambda hit: -hit.score), found

    def similarities(self, vector: Sequence[float], chunk_ids: Iterable[int]) -> dict[int, float]:
        wanted = list(chunk_ids)
        db = self.reader()
        if not wanted or not self._vectors_exist(db):
            return {}
        rows = db.execute(
            "SELECT chunk_id, 1 - (embedding <=> %s::vector) AS score FROM chunk_vectors "
            "WHERE chunk_id = ANY(%s)",
            (vector_text(unit(vector).tobytes()), wanted),
        )
        return {row["chunk_id"]: float(row["score"]) for row in rows}

    def _vectors_exist(self, db: psycopg.Connection[Any]) -> bool:
        """True once the vector table exists. It is made when an embedder is first bound, and a
        new embedder replaces it in one transaction, so a search need not ask again."""
        if not self._vector_table:
            self._vector_table = has_vectors(db)
        return self._vector_table

    def warm(self) -> None:
        """Reads the vector statistics and the keyword frequencies, and starts following the
        other replicas' changes."""
        self._stats.current()
        self._document_frequencies()

    # -- status -----------------------------------------------------------------------------------
    def _indexed_here(self, collection_id: int) -> bool:
        return collection_id in self._claimed

    def _location(self) -> tuple[str, int]:
        size = self.reader().execute("SELECT pg_database_size(current_database()) AS n").fetchone()
        return self.where, int(size["n"]) if size else 0


def vector_text(vector: bytes) -> str:
    """Float32 bytes as pgvector's text form."""
    return "[" + ",".join(repr(x) for x in np.frombuffer(vector, dtype=np.float32).tolist()) + "]"


def masked(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
