"""Several ragproxy replicas on one PostgreSQL index: each answers any request, and exactly one
indexes a given collection at a time. A replica takes the collections whose advisory lock it can
get (``Store.claim_collection``), every ``CLAIM_INTERVAL`` seconds; PostgreSQL frees the locks of
a replica that dies (its session ends), and the next round of another replica takes them over,
reconciling the folder with the index first, so what changed meanwhile is not lost."""

from __future__ import annotations

import threading

from proxy.index.indexer import Indexer
from proxy.index.store import Store
from proxy.index.watcher import FolderWatcher
from proxy.logging import get_logger

log = get_logger("ragproxy.index")

CLAIM_INTERVAL = 2.0  # seconds between claims: a dead replica's folders are taken over within ~2 s


class Claims:
    """Keeps claiming the indexer's collections, and hands the ones won to the watcher."""

    def __init__(
        self, store: Store, indexer: Indexer, watcher: FolderWatcher, interval: float = CLAIM_INTERVAL
    ) -> None:
        self.store = store
        self.indexer = indexer
        self.watcher = watcher
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ragproxy-claims", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def claim(self) -> set[str]:
        """One round: the collections held now. A lock lost (the session to the database broke)
        stops their indexing here until it is won again."""
        held = set()
        for name, collection in list(self.indexer.collections.items()):
            if self.store.claim_collection(collection.id):
                held.add(name)
        won, lost = held - self.watcher.held, self.watcher.held - held
        if won:
            log.info("index.claimed", collections=sorted(won))
            self.watcher.hold(won)
        if lost:
            log.warning("index.claim_lost", collections=sorted(lost))
            self.watcher.release(lost)
        return held

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.claim()
            except Exception as exc:  # the database is away: try again next round
                log.warning("index.claim_failed", error=str(exc)[:200])
            self._stop.wait(self.interval)
