"""The index store: one interface (``Store``), two engines. SQLite with sqlite-vec is the
embedded default, one file (the ``sqlite`` package); PostgreSQL with pgvector serves a team,
several ragproxy replicas sharing one database (the ``postgres`` package). What both keep alike
is beside them: ``common`` (rows, hashes, BM25), ``sql`` (the statements both run, written once,
in a base class parameterised by the dialect) and ``terms`` (which of a question's terms are
searched). ``open_store`` picks by the setting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from proxy.errors import ConfigError
from proxy.index.store.common import (
    DocumentState,
    Hit,
    NewDocument,
    PendingChunk,
    content_hash,
    content_hasher,
    embedding_text,
    moved_message,
    new_document,
    pack,
)
from proxy.index.store.sqlite import SqliteStore
from proxy.index.vectors import Background
from proxy.settings import is_database_url
from proxy.types import Chunk

__all__ = [
    "DocumentState",
    "Hit",
    "NewDocument",
    "PendingChunk",
    "SqliteStore",
    "Store",
    "content_hash",
    "content_hasher",
    "embedding_text",
    "moved_message",
    "new_document",
    "open_store",
    "pack",
]


class Store(Protocol):
    """What the indexer, the embedding worker and the searches use of an index."""

    readonly: bool

    def close(self) -> None: ...

    # collections and documents
    def collection_id(self, name: str, root: str, *, move: bool = False) -> int: ...
    def collections(self) -> dict[str, int]: ...
    def collection_roots(self) -> dict[str, str]: ...
    def document_state(self, collection_id: int, path: str) -> DocumentState | None: ...
    def document_states(self, collection_id: int) -> dict[str, DocumentState]: ...
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
    ) -> int: ...
    def replace_documents(self, collection_id: int, documents: Sequence[NewDocument]) -> list[int]: ...
    def touch_document(self, document_id: int, size: int, mtime: float) -> None: ...
    def move_document(self, collection_id: int, old: str, new: str) -> bool: ...
    def delete_documents(self, collection_id: int, paths: Iterable[str]) -> int: ...
    def record_skip(self, collection_id: int, path: str, reason: str) -> None: ...

    # who indexes a collection: one process at a time
    def claim_collection(self, collection_id: int) -> bool: ...
    def release_collection(self, collection_id: int) -> None: ...

    # embeddings
    def bind_embedder(self, name: str, dim: int, *, on_change: str = "reembed") -> bool: ...
    def embedder(self) -> tuple[str | None, int | None]: ...
    def pending_chunks(self, limit: int) -> list[PendingChunk]: ...
    def cached_vectors(self, model: str, hashes: Iterable[str]) -> dict[str, bytes]: ...
    def store_vectors(self, model: str, items: Sequence[tuple[PendingChunk, bytes]]) -> int: ...
    def prune_embedding_cache(self) -> int: ...

    # notes (what ``ragproxy status`` shows of a running server: the gate's calibration)
    def note(self, key: str) -> str | None: ...
    def set_note(self, key: str, value: str) -> None: ...

    # search
    def keyword_terms(self, query: str) -> dict[str, int | None]: ...
    def spelled(self, query: str) -> str: ...
    def search_keyword(
        self,
        query: str,
        k: int = 10,
        collections: Sequence[str] | None = None,
        terms: Mapping[str, int | None] | None = None,
    ) -> list[Hit]: ...
    def keyword_idf(
        self,
        query: str,
        terms: Mapping[str, int | None] | None = None,
        collections: Sequence[str] | None = None,
    ) -> dict[str, float]: ...
    def search_vector(
        self, vector: Sequence[float], k: int = 10, collections: Sequence[str] | None = None
    ) -> list[Hit]: ...
    def scan_vectors(
        self,
        vector: Sequence[float],
        k: int = 10,
        collections: Sequence[str] | None = None,
        cjk: bool | None = None,
    ) -> tuple[list[Hit], Background | None]: ...
    def similarities(self, vector: Sequence[float], chunk_ids: Iterable[int]) -> dict[int, float]: ...
    def warm(self) -> None: ...

    # reading back
    def chunk(self, chunk_id: int, collections: Sequence[str] | None = None) -> Hit | None: ...
    def document_chunks(self, collection: str, path: str) -> list[Hit] | None: ...
    def status(self) -> dict[str, Any]: ...


def open_store(db: str | Path, *, readonly: bool = False) -> Store:
    """The store the setting names: a ``postgresql://`` URL, or a SQLite file's path."""
    if is_database_url(db):
        try:
            from proxy.index.store.postgres import PostgresStore  # psycopg is only needed here
        except ImportError as exc:
            raise ConfigError(
                f"a PostgreSQL index needs psycopg ({exc}): install ragproxy with "
                "pip install 'ragproxy[postgres]'"
            ) from exc
        return PostgresStore(str(db), readonly=readonly)
    return SqliteStore(db, readonly=readonly)
