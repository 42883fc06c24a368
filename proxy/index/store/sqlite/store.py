"""The index store: documents, chunks, keyword (FTS5) and vector (sqlite-vec) search, in one
SQLite file. One writer connection behind a lock; each reading thread has its own connection."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from proxy.index.store.common import (
    Hit,
    NewDocument,
    PendingChunk,
    ThreadReader,
    embedding_text,
    hit_from_row,
)
from proxy.index.store.sql import embedder_mismatch
from proxy.index.store.sqlite.connection import Connection, connect
from proxy.index.store.sqlite.keywords import KeywordSearch, Vocabulary
from proxy.index.store.sqlite.matrix import VectorMatrix
from proxy.index.store.sqlite.migrations import check_schema, migrate
from proxy.index.vectors import Background
from proxy.text import written_in_cjk

LOAD_BATCH = 4096  # vectors read per step when the matrix loads


class SqliteStore(KeywordSearch):
    MARK = "?"
    CHUNK_COLLECTION = "d.collection_id"  # chunks know their document only

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        """``readonly``: the file must exist and be current; nothing is created or migrated
        (``status`` and ``search`` read an index, they never make one)."""
        self.path = Path(path)
        self.readonly = readonly
        self._writer = connect(self.path, readonly=readonly)
        try:
            check_schema(self._writer, self.path) if readonly else migrate(self._writer)
        except BaseException:
            self._writer.close()
            raise
        super().__init__()
        self._vectors: VectorMatrix | None = None  # loaded on the first vector search
        self._vectors_version = -1
        self._vocabulary = Vocabulary()  # document frequencies, to choose a query's search terms

    # -- connections ---------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction; nothing slow (no embedding) may happen inside it."""
        with self._lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                self._vectors = None  # it may hold changes that were just undone
                raise

    def reader(self) -> Connection:
        """This thread's read connection. It is closed when the thread ends: the server's worker
        threads come and go, and connections kept past them would exhaust file descriptors."""
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = ThreadReader(connect(self.path, readonly=self.readonly))
            with self._lock:
                self._readers.add(reader)
        return reader.conn

    @staticmethod
    def member(column: str, ids: Sequence[int]) -> tuple[str, list[Any]]:
        return f"{column} IN ({','.join('?' * len(ids))})", list(ids)

    # -- collections and documents --------------------------------------------------------------
    def collection_id(self, name: str, root: str, *, move: bool = False) -> int:
        """The collection ``name`` over the folder ``root``, created if new. A collection never
        changes folder unless ``move`` says so: a second folder of the same name would otherwise
        replace the first one's documents."""
        with self.write() as db:
            row = db.execute("SELECT id, root FROM collections WHERE name = ?", (name,)).fetchone()
            if row is None:
                cursor = db.execute("INSERT INTO collections(name, root) VALUES (?, ?)", (name, root))
                return int(cursor.lastrowid)
            return self._keep_root(db, row, name, root, move)

    def replace_documents(self, collection_id: int, documents: Sequence[NewDocument]) -> list[int]:
        """Several documents in one transaction (a scan writes in batches: fewer commits and
        larger FTS5 segments). Returns their ids, in order; of a path given twice, the last wins."""
        latest = {document.path: document for document in documents}
        with self.write() as db:
            # The FTS5 rows go last, all in one statement: FTS5 keeps inserted rows in memory until
            # the commit, but writes them out as a new segment whenever another statement of the
            # transaction opens a savepoint (an INSERT into a table with a foreign key does).
            # Interleaved per document, that was one tiny segment per file, merged over and over.
            ids = {
                path: self._replace_document_row(db, collection_id, path, document)
                for path, document in latest.items()
            }
            row = db.execute("SELECT value FROM meta WHERE key = 'next_chunk_id'").fetchone()
            first = max(
                int(row[0]) if row else 0,
                int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM chunks").fetchone()[0]),
            )
            # Ids chosen here (we hold the only write lock), so each table gets one executemany.
            # Ids are never reused (a counter in meta), so an id a search just read cannot name
            # new text.
            chunk_rows: list[tuple[Any, ...]] = []
            fts_rows: list[tuple[int, str]] = []
            for path, document in latest.items():
                for chunk, digest, keywords in zip(
                    document.chunks, document.hashes, document.keyword_texts, strict=True
                ):
                    chunk_id = first + len(chunk_rows)
                    chunk_rows.append(
                        (
                            chunk_id,
                            ids[path],
                            chunk.ordinal,
                            chunk.text,
                            chunk.start,
                            chunk.end,
                            chunk.heading,
                            chunk.page,
                            digest,
                            written_in_cjk(chunk.text),
                        )
                    )
                    fts_rows.append((chunk_id, keywords))
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('next_chunk_id', ?)", (str(first + len(chunk_rows)),)
            )
            db.executemany(
                "INSERT INTO chunks(id, document_id, ordinal, text, start, end, heading, page, "
                "content_hash, cjk) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                chunk_rows,
            )
            db.executemany("INSERT INTO chunks_fts(rowid, body) VALUES (?, ?)", fts_rows)
            if chunk_rows:  # last: reading the sizes back would write out FTS5's rows early
                _count_chunks(
                    db, collection_id, f"c.id BETWEEN {first} AND {first + len(chunk_rows) - 1}", +1
                )
        return [ids[document.path] for document in documents]

    def _replace_document_row(
        self, db: Connection, collection_id: int, path: str, document: NewDocument
    ) -> int:
        """The document's row, inserted or updated, its old chunks gone; its id."""
        fields = (document.digest, document.size, document.mtime, document.loader, time.time())
        old = db.execute(
            "SELECT id FROM documents WHERE collection_id = ? AND path = ?", (collection_id, path)
        ).fetchone()
        db.execute("DELETE FROM skipped WHERE collection_id = ? AND path = ?", (collection_id, path))
        if old is None:
            return int(
                db.execute(
                    "INSERT INTO documents(collection_id, path, content_hash, size, mtime, loader, "
                    "indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (collection_id, path, *fields),
                ).fetchone()[0]
            )
        self._delete_chunks(db, int(old[0]))
        db.execute(
            "UPDATE documents SET content_hash = ?, size = ?, mtime = ?, loader = ?, indexed_at = ? "
            "WHERE id = ?",
            (*fields, old[0]),
        )
        return int(old[0])

    def move_document(self, collection_id: int, old: str, new: str) -> bool:
        """A rename keeps chunks and vectors; only the path changes."""
        with self.write() as db:
            db.execute("DELETE FROM skipped WHERE collection_id = ? AND path = ?", (collection_id, new))
            existing = db.execute(
                "SELECT id FROM documents WHERE collection_id = ? AND path = ?", (collection_id, new)
            ).fetchone()
            if existing:
                self._delete_document(db, int(existing[0]))
            moved = db.execute(
                "UPDATE documents SET path = ? WHERE collection_id = ? AND path = ?",
                (new, collection_id, old),
            ).rowcount
            return bool(moved)

    def delete_documents(self, collection_id: int, paths: Iterable[str]) -> int:
        count = 0
        with self.write() as db:
            for path in paths:
                row = db.execute(
                    "SELECT id FROM documents WHERE collection_id = ? AND path = ?", (collection_id, path)
                ).fetchone()
                db.execute("DELETE FROM skipped WHERE collection_id = ? AND path = ?", (collection_id, path))
                if row:
                    self._delete_document(db, int(row[0]))
                    count += 1
        return count

    def _delete_document(self, db: Connection, document_id: int) -> None:
        self._delete_chunks(db, document_id)
        db.execute("DELETE FROM documents WHERE id = ?", (document_id,))

    def _delete_chunks(self, db: Connection, document_id: int) -> None:
        """The document's chunks, from every table and its collection's totals."""
        ids = [row[0] for row in db.execute("SELECT id FROM chunks WHERE document_id = ?", (document_id,))]
        if ids:
            row = db.execute("SELECT collection_id FROM documents WHERE id = ?", (document_id,)).fetchone()
            _count_chunks(db, row[0], "c.document_id = ?", -1, (document_id,))
        has_vectors = self._has_vectors(db)
        rows = [(chunk_id,) for chunk_id in ids]
        db.executemany("DELETE FROM chunks_fts WHERE rowid = ?", rows)
        if has_vectors:
            db.executemany("DELETE FROM chunks_vec WHERE chunk_id = ?", rows)
        db.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
        if has_vectors and ids:
            if self._bump_vectors_version(db) and self._vectors is not None:
                self._vectors.remove(ids)

    def _bump_vectors_version(self, db: Connection) -> bool:
        """Counts a change to the vectors (inside the write transaction). True if the matrix in
        memory was current and may be updated in place; if another process changed the vectors
        meanwhile, it is dropped and reloaded by the next search."""
        row = db.execute("SELECT value FROM meta WHERE key = 'vectors_version'").fetchone()
        current = int(row[0]) if row else 0
        db.execute("INSERT OR REPLACE INTO meta VALUES ('vectors_version', ?)", (str(current + 1),))
        in_step = self._vectors is not None and self._vectors_version == current
        if in_step:
            self._vectors_version = current + 1
        else:
            self._vectors = None
        return in_step

    @staticmethod
    def _has_vectors(db: Connection) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks_vec'").fetchone() is not None

    def record_skip(self, collection_id: int, path: str, reason: str) -> None:
        with self.write() as db:
            row = db.execute(
                "SELECT id FROM documents WHERE collection_id = ? AND path = ?", (collection_id, path)
            ).fetchone()
            if row:  # a file that became unreadable is no longer what the index holds
                self._delete_document(db, int(row[0]))
            self._record_skip_row(db, collection_id, path, reason, time.time())

    # -- who indexes ----------------------------------------------------------------------------
    def claim_collection(self, collection_id: int) -> bool:
        """A SQLite file is one machine's: the process that opens it indexes it."""
        return True

    def release_collection(self, collection_id: int) -> None:
        pass

    # -- embeddings -----------------------------------------------------------------------------
    def bind_embedder(self, name: str, dim: int, *, on_change: str = "reembed") -> bool:
        """Records the embedder. With a different one already recorded, either drops every vector
        so all chunks are embedded again (``reembed``) or refuses. Returns True if vectors were dropped."""
        with self.write() as db:
            meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('embedder', 'dim')").fetchall())
            if meta.get("embedder") == name and meta.get("dim") == str(dim) and self._has_vectors(db):
                return False
            changed = "embedder" in meta
            if changed and on_change == "refuse":
                raise embedder_mismatch(f"the index at {self.path}", meta, name)
            db.execute("DROP TABLE IF EXISTS chunks_vec")
            db.execute(f"""CREATE VIRTUAL TABLE chunks_vec USING vec0(
                chunk_id INTEGER PRIMARY KEY, collection_id INTEGER PARTITION KEY,
                embedding float[{int(dim)}])""")
            db.execute("UPDATE chunks SET embedded = 0")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('embedder', ?), ('dim', ?)", (name, str(dim)))
            self._bump_vectors_version(db)
            self._vectors = None
            return changed

    def pending_chunks(self, limit: int) -> list[PendingChunk]:
        rows = self.reader().execute(
            "SELECT c.id, d.collection_id, c.content_hash, c.text, c.heading, c.cjk FROM chunks c "
            "JOIN documents d ON d.id = c.document_id WHERE c.embedded = 0 ORDER BY c.id LIMIT ?",
            (limit,),
        )
        return [PendingChunk(r[0], r[1], r[2], embedding_text(r[3], r[4]), bool(r[5])) for r in rows]

    def cached_vectors(self, model: str, hashes: Iterable[str]) -> dict[str, bytes]:
        wanted = list(set(hashes))
        found: dict[str, bytes] = {}
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            rows = self.reader().execute(
                f"SELECT content_hash, vector FROM embedding_cache WHERE model = ? AND content_hash IN "
                f"({','.join('?' * len(part))})",
                (model, *part),
            )
            found.update((row[0], row[1]) for row in rows)
        return found

    def store_vectors(self, model: str, items: Sequence[tuple[PendingChunk, bytes]]) -> int:
        """Writes vectors for chunks that still exist unchanged (a file may have changed while
        its old text was being embedded). Returns how many were written."""
        written = 0
        added: list[tuple[int, int, bytes, bool]] = []
        with self.write() as db:
            for chunk, vector in items:
                db.execute(
                    "INSERT OR IGNORE INTO embedding_cache(model, content_hash, vector) VALUES (?, ?, ?)",
                    (model, chunk.content_hash, vector),
                )
                updated = db.execute(
                    "UPDATE chunks SET embedded = 1 WHERE id = ? AND content_hash = ? AND embedded = 0 "
                    "AND document_id IN (SELECT id FROM documents WHERE collection_id = ?)",
                    (chunk.chunk_id, chunk.content_hash, chunk.collection_id),
                ).rowcount
                if updated:
                    db.execute(
                        "INSERT INTO chunks_vec(chunk_id, collection_id, embedding) VALUES (?, ?, ?)",
                        (chunk.chunk_id, chunk.collection_id, vector),
                    )
                    written += 1
                    added.append((chunk.chunk_id, chunk.collection_id, vector, chunk.cjk))
            if added and self._bump_vectors_version(db) and self._vectors is not None:
                ids, collection_ids, vectors, scripts = zip(*added, strict=True)
                self._vectors.add_many(
                    ids,
                    collection_ids,
                    np.frombuffer(b"".join(vectors), dtype=np.float32).reshape(len(added), -1),
                    scripts,
                )
        return written

    # -- vector search ----------------------------------------------------------------------------
    def scan_vectors(
        self,
        vector: Sequence[float],
        k: int = 10,
        collections: Sequence[str] | None = None,
        cjk: bool | None = None,
    ) -> tuple[list[Hit], Background | None]:
        """The nearest neighbours, and the query's similarity to the chunks searched (to those in
        its script, ``cjk``, if given)."""
        chosen = self._collection_ids(collections)
        if chosen == []:
            return [], None
        with self._lock:  # writers update the matrix in place under the same lock
            matrix = self._current_vectors()
            found, background = matrix.scan(vector, k, chosen, cjk) if matrix is not None else ([], None)
        if not found:
            return [], background
        scores = dict(found)
        order = {chunk_id: i for i, (chunk_id, _) in enumerate(found)}  # the scan's (``by_script``)
        hits = [hit_from_row(row, scores[row["id"]]) for row in self._hit_rows(scores)]
        return sorted(hits, key=lambda hit: order[hit.chunk_id]), background

    def similarities(self, vector: Sequence[float], chunk_ids: Iterable[int]) -> dict[int, float]:
        """Cosine similarity of the query to each of these chunks that has a vector yet."""
        with self._lock:
            matrix = self._current_vectors()
            return matrix.similarities(vector, chunk_ids) if matrix is not None else {}

    def warm(self) -> None:
        """Reads what the first search would otherwise wait for: the vectors into memory (~5 s
        at 100k chunks) and the keyword vocabulary."""
        with self._lock:
            self._current_vectors()
        self._vocabulary.frequencies(self.reader())

    def _current_vectors(self) -> VectorMatrix | None:
        """The matrix, (re)loaded from sqlite-vec's table if another process changed the vectors."""
        db = self.reader()
        row = db.execute("SELECT value FROM meta WHERE key = 'vectors_version'").fetchone()
        version = int(row[0]) if row else 0
        if self._vectors is not None and self._vectors_version == version:
            return self._vectors
        dim_row = db.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
        if dim_row is None or not self._has_vectors(db):
            return None
        dim = int(dim_row[0])
        matrix = VectorMatrix(dim)
        db.execute("BEGIN")  # one snapshot: the version and the rows agree
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'vectors_version'").fetchone()
            version = int(row[0]) if row else 0
            cursor = db.execute(
                "SELECT v.chunk_id, v.collection_id, v.embedding, c.cjk "
                "FROM chunks_vec v JOIN chunks c ON c.id = v.chunk_id"
            )
            while rows := cursor.fetchmany(LOAD_BATCH):
                matrix.add_many(
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), dim),
                    [bool(r[3]) for r in rows],
                )
        finally:
            db.execute("COMMIT")
        self._vectors, self._vectors_version = matrix, version
        _release_freed_memory()  # the rows read to load it: ~40 MB at 100k chunks
        return matrix

    # -- status -----------------------------------------------------------------------------------
    def quick_check(self) -> list[str]:
        """What SQLite's ``quick_check`` finds wrong with the file ([] if nothing)."""
        found = [row[0] for row in self.reader().execute("PRAGMA quick_check").fetchall()]
        return [] if found == ["ok"] else found

    def _indexed_here(self, collection_id: int) -> bool:
        return True  # one machine's file: whoever opens it indexes

    def _location(self) -> tuple[str, int]:
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return str(self.path), size


def _count_chunks(
    db: Connection, collection_id: int, where: str, sign: int, args: tuple[Any, ...] = ()
) -> None:
    """Adds (``sign`` +1) or takes away (-1) the chunks ``where`` selects (``c``: chunks) to their
    collection's totals, tokens as FTS5 counted them."""
    db.execute(
        "INSERT INTO collection_totals SELECT ?, ? * count(*), ? * coalesce(sum(fts5_tokens(s.sz)), 0) "
        f"FROM chunks c LEFT JOIN chunks_fts_docsize s ON s.id = c.id WHERE {where} "
        "ON CONFLICT (collection_id) DO UPDATE SET chunks = chunks + excluded.chunks, "
        "tokens = tokens + excluded.tokens",
        (collection_id, sign, sign, *args),
    )


def _release_freed_memory() -> None:
    """Hands memory freed by Python back to the system (glibc keeps it otherwise, in the gaps
    between objects still alive). Elsewhere, nothing to do."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
