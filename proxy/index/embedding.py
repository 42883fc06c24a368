"""The embedding worker: a background thread that gives vectors to the chunks the indexer wrote
without them."""

from __future__ import annotations

import threading
from collections.abc import Callable

from proxy.index.store import PendingChunk, Store, pack
from proxy.logging import get_logger
from proxy.types import Embedder

log = get_logger("ragproxy.index")


class EmbeddingWorker:
    """Fills in vectors for chunks that have none, in batches, outside any write transaction;
    text embedded before (same content hash, same model) is taken from the cache."""

    def __init__(self, store: Store, embedder: Embedder, batch: int = 16) -> None:
        self.store = store
        self.embedder = embedder
        self.batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.embedded = 0  # chunks given vectors since start (read as a throughput counter)

    def notify(self) -> None:
        self._wake.set()

    def embed_pending(self, progress: Callable[[int], None] | None = None) -> int:
        """Embeds until nothing is pending; returns how many chunks got vectors."""
        done = 0
        while not self._stop.is_set():
            pending = self.store.pending_chunks(self.batch)
            if not pending:
                return done
            done += self._embed(pending)
            if progress:
                progress(done)
        return done

    def _embed(self, pending: list[PendingChunk]) -> int:
        model = self.embedder.name
        cached = self.store.cached_vectors(model, (p.content_hash for p in pending))
        missing = [p for p in pending if p.content_hash not in cached]
        if missing:
            vectors = self.embedder.embed_documents([p.text for p in missing])
            cached.update((p.content_hash, pack(v)) for p, v in zip(missing, vectors, strict=True))
        written = self.store.store_vectors(model, [(p, cached[p.content_hash]) for p in pending])
        self.embedded += written
        if written < len(pending):  # chunks replaced meanwhile: skip them next time round
            log.debug("embed.stale", count=len(pending) - written)
        return len(pending)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ragproxy-embed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.embed_pending()
            except Exception:
                log.exception("embed.failed")
                self._stop.wait(5)
                continue
            self._wake.wait(5)
