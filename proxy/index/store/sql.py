"""What both engines run alike, written once: ``SqlStore``, the base of ``SqliteStore`` and
``PostgresStore``, with the statements whose SQL is the same on SQLite and PostgreSQL but for the
dialect. A dialect is what a subclass sets: its placeholder (``MARK``: ``?`` or ``%s``), where a
chunk's collection is read (SQLite's chunks reach it through their document, PostgreSQL's hold it),
and how a list of ids is matched (``member``: ``IN (?, ?, ...)`` or ``= ANY(%s)``).

What the engines do differently stays with each: writing chunks (FTS5 rows and a chunk-id counter;
one COPY with a ``tsvector`` each), deletes (by hand; by cascade), keyword and vector search, the
embedder's tables, and the claims of replicas."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from proxy.errors import ConfigError
from proxy.index.store.common import (
    DocumentState,
    Hit,
    NewDocument,
    ThreadReader,
    hit_from_row,
    moved_message,
    new_document,
)
from proxy.index.vectors import Background
from proxy.types import Chunk

HIT_COLUMNS = (
    'c.id, c.text, c.start, c."end", c.heading, c.page, c.ordinal, c.document_id, c.content_hash, c.cjk, '
    "d.path, k.name"
)


class SqlStore:
    MARK: ClassVar[str]  # the driver's placeholder
    CHUNK_COLLECTION: ClassVar[str]  # the column holding a chunk's collection id, in ``hit_join``

    def __init__(self) -> None:
        """The readers' bookkeeping; the subclass has opened ``_writer`` (and checked or migrated
        the schema with it) first."""
        self._lock = threading.RLock()
        self._local = threading.local()
        self._readers: weakref.WeakSet[ThreadReader] = weakref.WeakSet()

    # -- what each engine provides ----------------------------------------------------------------
    _writer: Any

    def reader(self) -> Any:
        raise NotImplementedError

    def write(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def replace_documents(self, collection_id: int, documents: Sequence[NewDocument]) -> list[int]:
        raise NotImplementedError

    def scan_vectors(
        self,
        vector: Sequence[float],
        k: int = 10,
        collections: Sequence[str] | None = None,
        cjk: bool | None = None,
    ) -> tuple[list[Hit], Background | None]:
        raise NotImplementedError

    @staticmethod
    def member(column: str, ids: Sequence[int]) -> tuple[str, list[Any]]:
        """A condition that ``column`` is one of ``ids``, and its parameters."""
        raise NotImplementedError

    def _indexed_here(self, collection_id: int) -> bool:
        """Whether this process indexes the collection (``status``)."""
        raise NotImplementedError

    def _location(self) -> tuple[str, int]:
        """Where the index is, as ``status`` shows it, and its size in bytes."""
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            for reader in list(self._readers):
                reader.close()
            self._writer.close()

    # -- collections and documents --------------------------------------------------------------
    def collections(self) -> dict[str, int]:
        return {row["name"]: row["id"] for row in self.reader().execute("SELECT id, name FROM collections")}

    def collection_roots(self) -> dict[str, str]:
        """Each collection's folder, by name."""
        rows = self.reader().execute("SELECT name, root FROM collections")
        return {row["name"]: row["root"] for row in rows}

    def _keep_root(self, db: Any, row: Any, name: str, root: str, move: bool) -> int:
        """The id of the collection ``row`` (its id and root), which keeps its folder unless
        ``move`` says so: a second folder of the same name would otherwise replace the first
        one's documents."""
        if row["root"] != root:
            if not move:
                raise ConfigError(moved_message(name, row["root"], root))
            m = self.MARK
            db.execute(f"UPDATE collections SET root = {m} WHERE id = {m}", (root, row["id"]))
        return int(row["id"])

    def _collection_ids(self, collections: Sequence[str] | None) -> list[int] | None:
        """The ids of these collections (None: all); [] if none of them exists."""
        if collections is None:
            return None
        wanted = set(collections)
        return [i for name, i in self.collections().items() if name in wanted]

    def document_state(self, collection_id: int, path: str) -> DocumentState | None:
        m = self.MARK
        row = (
            self.reader()
            .execute(
                "SELECT id, content_hash, size, mtime FROM documents "
                f"WHERE collection_id = {m} AND path = {m}",
                (collection_id, path),
            )
            .fetchone()
        )
        return DocumentState(row["id"], row["content_hash"], row["size"], row["mtime"]) if row else None

    def document_states(self, collection_id: int) -> dict[str, DocumentState]:
        rows = self.reader().execute(
            f"SELECT path, id, content_hash, size, mtime FROM documents WHERE collection_id = {self.MARK}",
            (collection_id,),
        )
        return {r["path"]: DocumentState(r["id"], r["content_hash"], r["size"], r["mtime"]) for r in rows}

    def replace_document(
        self,
        collection_id: int,
        path: str,
        *,
        digest: str,
        size: int,
        mtime: float,
        loader: str,
        chunks: Sequence[Chunk],
    ) -> int:
        """The document's rows, chunks and keyword index in one transaction: searchable by
        keyword the moment it commits. Vectors follow from the embedding worker."""
        return self.replace_documents(
            collection_id, [new_document(path, digest, size, mtime, loader, chunks)]
        )[0]

    def touch_document(self, document_id: int, size: int, mtime: float) -> None:
        m = self.MARK
        with self.write() as db:
            db.execute(
                f"UPDATE documents SET size = {m}, mtime = {m} WHERE id = {m}", (size, mtime, document_id)
            )

    def _record_skip_row(self, db: Any, collection_id: int, path: str, reason: str, at: float) -> None:
        m = self.MARK
        db.execute(
            f"INSERT INTO skipped VALUES ({m}, {m}, {m}, {m}) ON CONFLICT (collection_id, path) DO UPDATE "
            "SET reason = excluded.reason, at = excluded.at",
            (collection_id, path, reason, at),
        )

    # -- notes ------------------------------------------------------------------------------------
    def note(self, key: str) -> str | None:
        """What the server noted under ``key`` for ``ragproxy status`` to show (the gate's
        calibration), if anything."""
        row = self.reader().execute(f"SELECT value FROM meta WHERE key = {self.MARK}", (f"note:{key}",))
        found = row.fetchone()
        return None if found is None else str(found["value"])

    def set_note(self, key: str, value: str) -> None:
        m = self.MARK
        with self.write() as db:
            db.execute(
                f"INSERT INTO meta VALUES ({m}, {m}) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"note:{key}", value),
            )

    # -- embeddings -----------------------------------------------------------------------------
    def embedder(self) -> tuple[str | None, int | None]:
        """The embedder whose vectors the index holds (name, dimensions), if any."""
        rows = self.reader().execute("SELECT key, value FROM meta WHERE key IN ('embedder', 'dim')")
        meta = {row["key"]: row["value"] for row in rows}
        return meta.get("embedder"), int(meta["dim"]) if "dim" in meta else None

    def prune_embedding_cache(self) -> int:
        """Drops cached vectors of text no chunk holds any more (edited or deleted files), so the
        cache does not grow with every save. Vectors of live text are kept for every model."""
        with self.write() as db:
            return int(
                db.execute(
                    "DELETE FROM embedding_cache WHERE NOT EXISTS "
                    "(SELECT 1 FROM chunks c WHERE c.content_hash = embedding_cache.content_hash)"
                ).rowcount
            )

    # -- search ---------------------------------------------------------------------------------
    def search_vector(
        self, vector: Sequence[float], k: int = 10, collections: Sequence[str] | None = None
    ) -> list[Hit]:
        """The nearest neighbours among the chunks embedded so far; score = cosine similarity."""
        return self.scan_vectors(vector, k, collections)[0]

    # -- reading chunks back ----------------------------------------------------------------------
    @property
    def hit_join(self) -> str:
        """The tables ``HIT_COLUMNS`` are read from."""
        return (
            "FROM chunks c JOIN documents d ON d.id = c.document_id "
            f"JOIN collections k ON k.id = {self.CHUNK_COLLECTION}"
        )

    def _hit_rows(self, chunk_ids: Iterable[int]) -> list[Any]:
        """The rows of these chunks (``HIT_COLUMNS``), in the order the database reads them."""
        where, args = self.member("c.id", list(chunk_ids))
        return list(self.reader().execute(f"SELECT {HIT_COLUMNS} {self.hit_join} WHERE {where}", args))

    def _hits(self, scores: Mapping[int, float]) -> list[Hit]:
        """The chunks, in the order of ``scores``, with those scores."""
        if not scores:
            return []
        by_id = {row["id"]: row for row in self._hit_rows(scores)}
        return [hit_from_row(by_id[i], score) for i, score in scores.items() if i in by_id]

    def chunk(self, chunk_id: int, collections: Sequence[str] | None = None) -> Hit | None:
        """The chunk ``chunk_id`` if it is in one of ``collections`` (None: any), with score 0."""
        chosen = self._collection_ids(collections)
        if chosen == []:
            return None
        where, args = ("", []) if chosen is None else self.member(self.CHUNK_COLLECTION, chosen)
        row = (
            self.reader()
            .execute(
                f"SELECT {HIT_COLUMNS} {self.hit_join} WHERE c.id = {self.MARK}"
                + (f" AND {where}" if where else ""),
                (chunk_id, *args),
            )
            .fetchone()
        )
        return hit_from_row(row, 0.0) if row else None

    def document_chunks(self, collection: str, path: str) -> list[Hit] | None:
        """Every chunk of the document ``path`` of ``collection``, in order; None if there is no
        such document."""
        db, m = self.reader(), self.MARK
        document = db.execute(
            "SELECT d.id FROM documents d JOIN collections k ON k.id = d.collection_id "
            f"WHERE k.name = {m} AND d.path = {m}",
            (collection, path),
        ).fetchone()
        if document is None:
            return None
        rows = db.execute(
            f"SELECT {HIT_COLUMNS} {self.hit_join} WHERE c.document_id = {m} ORDER BY c.ordinal",
            (document["id"],),
        )
        return [hit_from_row(row, 0.0) for row in rows]

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        db, m = self.reader(), self.MARK
        embedder, dim = self.embedder()
        collections = []
        for row in db.execute("SELECT id, name, root FROM collections ORDER BY name").fetchall():
            counts = db.execute(
                "SELECT count(DISTINCT d.id) AS documents, count(c.id) AS chunks, "
                "count(c.id) FILTER (WHERE NOT c.embedded) AS pending, max(d.indexed_at) AS last "
                f"FROM documents d LEFT JOIN chunks c ON c.document_id = d.id WHERE d.collection_id = {m}",
                (row["id"],),
            ).fetchone()
            skipped = db.execute(
                f"SELECT path, reason FROM skipped WHERE collection_id = {m} ORDER BY path", (row["id"],)
            ).fetchall()
            collections.append(
                {
                    "name": row["name"],
                    "root": row["root"],
                    "documents": counts["documents"],
                    "chunks": counts["chunks"],
                    "pending_vectors": counts["pending"],
                    "last_update": counts["last"],
                    "skipped": [{"path": s["path"], "reason": s["reason"]} for s in skipped],
                    "indexed_here": self._indexed_here(row["id"]),
                }
            )
        where, size = self._location()
        return {"db": where, "db_bytes": size, "embedder": embedder, "dim": dim, "collections": collections}


def embedder_mismatch(index: str, meta: Mapping[str, str], name: str) -> ConfigError:
    """The refusal to mix another embedder's vectors into ``index`` ("the index at PATH")."""
    return ConfigError(
        f"{index} holds vectors from embedder {meta['embedder']!r} ({meta['dim']} dimensions); "
        f"starting with {name!r} would mix them. Use the same embedder, or allow re-embedding "
        "everything (--on-embedder-change reembed)."
    )
