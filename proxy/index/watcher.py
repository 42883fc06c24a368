"""Keeps the index current while ragproxy runs: a watchdog observer over each collection's
folder, events debounced per path, applied by one thread. At start it reconciles the index
with the folders (catching what changed while ragproxy was down); an event storm larger than
the queue can usefully hold degrades to another reconciliation scan. Every ``verify_every``
seconds a verifying scan reads every indexed file, for edits no event or mtime told of."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from proxy.index.indexer import Collection, Indexer
from proxy.index.names import path_text
from proxy.logging import get_logger

log = get_logger("ragproxy.watch")


@dataclass
class _Change:
    kind: str  # "update", "delete" or "move"
    due: float
    dest: Path | None = None


class FolderWatcher:
    def __init__(
        self,
        indexer: Indexer,
        *,
        debounce: float = 0.1,
        storm: int = 5000,
        verify_every: float = 0,
        held: set[str] | None = None,
    ) -> None:
        """``verify_every``: seconds between verifying scans (0: none). ``held``: the collections
        this process indexes (None: all of the indexer's); more are taken on with ``hold``."""
        self.indexer = indexer
        self.held = set(indexer.collections) if held is None else set(held)
        self._watched: set[Path] = set()
        self.debounce = debounce
        self.storm = storm
        self.verify_every = verify_every
        self._verify_at = time.monotonic() + verify_every if verify_every > 0 else None
        self._pending: dict[Path, _Change] = {}
        self._rescan: set[str] = set(self.held)  # reconcile everything at start
        self._cond = threading.Condition()
        self._stopping = False
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None
        self.idle = threading.Event()  # set whenever nothing is queued or being applied
        self.storms = 0  # times the queue overflowed into a rescan
        self.rescans = 0  # collections scanned whole: at start, after a storm or .gitignore change, verifying

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._observer = self._observe(Observer())
        self._thread = threading.Thread(target=self._run, name="ragproxy-watch", daemon=True)
        self._thread.start()

    def _observe(self, observer: BaseObserver) -> BaseObserver:
        self._handler = _Handler(self)
        try:
            self._schedule(observer)
            observer.start()
        except OSError as exc:  # e.g. the inotify watch limit: fall back to polling
            log.warning("watch.polling", reason=str(exc))
            observer = PollingObserver(timeout=2)
            self._watched.clear()
            self._schedule(observer)
            observer.start()
        return observer

    def _schedule(self, observer: BaseObserver) -> None:
        for root in self._roots():
            if not any(root.is_relative_to(watched) for watched in self._watched):  # itself, or inside one
                observer.schedule(self._handler, str(root), recursive=True)
                self._watched.add(root)

    def _roots(self) -> list[Path]:
        """The folders to watch: a collection's folder inside another's is watched with it."""
        roots = {c.root for name, c in self.indexer.collections.items() if name in self.held}
        return sorted(r for r in roots if not any(r != o and r.is_relative_to(o) for o in roots))

    def hold(self, names: set[str]) -> None:
        """Takes on more collections (another replica indexed them until now): watched from now
        on, and reconciled with their folders at once, which catches what changed meanwhile."""
        with self._cond:
            new = names - self.held
            if not new:
                return
            self.held |= new
            self._rescan |= new
            self.idle.clear()
            if self._observer is not None:
                self._schedule(self._observer)
            self._cond.notify()

    def release(self, names: set[str]) -> None:
        """Stops indexing these collections (another process holds them now)."""
        with self._cond:
            self.held -= names
            self._rescan -= names

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(10)
        if self._thread is not None:
            self._thread.join(30)

    def queue_depth(self) -> int:
        """Changes waiting for their debounce or for the thread that applies them."""
        with self._cond:
            return len(self._pending)

    # -- events -----------------------------------------------------------------------------------
    def queue(self, kind: str, path: Path, dest: Path | None = None) -> None:
        with self._cond:
            owner = self._held_collection(path)
            if owner is None and (dest is None or self._held_collection(dest) is None):
                return  # outside the collections this process indexes
            self.idle.clear()
            if ".gitignore" in (path.name, dest.name if dest else None):  # reconcile the whole folder
                collection = owner
                if collection is not None:
                    self._rescan.add(collection.name)
                    self._cond.notify()
                return
            if len(self._pending) >= self.storm:
                collection = owner
                if collection is not None and collection.name not in self._rescan:
                    log.warning("watch.storm", collection=collection.name, queued=len(self._pending))
                    self._rescan.add(collection.name)
                    self.storms += 1
                self._cond.notify()
                return
            change = self._pending.pop(path, None)
            due = time.monotonic() + self.debounce
            if change is not None and change.kind == "move" and kind == "update":
                kind, dest = "move", change.dest  # a moved file touched again: still a move first
            self._pending[path] = _Change(kind, due, dest)  # re-inserted last: order of arrival
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._rescan and not self._due() and not self._verify_due():
                    if not self._pending:
                        self.idle.set()
                    dues = [c.due for c in self._pending.values()]
                    timeout = min([*dues, self._verify_at] if self._verify_at else dues, default=None)
                    self._cond.wait(None if timeout is None else max(timeout - time.monotonic(), 0.001))
                if self._stopping:
                    return
                verify = self._verify_due()
                if verify:  # every collection, and the queued changes with them
                    self._verify_at = time.monotonic() + self.verify_every
                    self.idle.clear()
                    self._rescan.update(self.held)
                rescan, self._rescan = self._rescan, set()
                if rescan:  # a rescan covers every queued change of the collections it scans
                    for path in self._pending:
                        collection = self._held_collection(path)
                        if collection is not None:
                            rescan.add(collection.name)
                    self._pending.clear()
                ready = [] if rescan else self._take_due()
            # the watcher must outlive any one bad event, and one never costs the others
            for name in sorted(rescan):
                try:
                    report = self.indexer.scan(self.indexer.collections[name], verify=verify)
                    self.rescans += 1
                    log.info("watch.verified" if verify else "watch.scanned", collection=name, **vars(report))
                except Exception:
                    log.exception("watch.failed", collection=name)
            for path, change in ready:
                try:
                    self._apply(path, change)
                except Exception:
                    log.exception("watch.failed", path=path_text(str(path)))

    def _verify_due(self) -> bool:
        return self._verify_at is not None and self._verify_at <= time.monotonic()

    def _due(self) -> bool:
        now = time.monotonic()
        return any(c.due <= now for c in self._pending.values())

    def _take_due(self) -> list[tuple[Path, _Change]]:
        now = time.monotonic()
        ready = [(p, c) for p, c in self._pending.items() if c.due <= now]
        for path, _ in ready:
            del self._pending[path]
        return ready

    def _held_collection(self, path: Path) -> Collection | None:
        """The collection the path belongs to, if this process indexes it."""
        collection = self.indexer.collection_for(path)
        return collection if collection is not None and collection.name in self.held else None

    def _apply(self, path: Path, change: _Change) -> None:
        collection = self._held_collection(path)
        if change.kind == "move" and change.dest is not None:
            if collection is None:
                target = self._held_collection(change.dest)
                if target is not None:
                    self.indexer.scan_path(target, change.dest)
            else:
                self.indexer.move_path(collection, path, change.dest)
        elif collection is None:
            return
        elif change.kind == "delete" or not path.exists():
            self.indexer.remove_path(collection, path)
        else:
            self.indexer.scan_path(collection, path)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = Path(_text(event.src_path))
        if event.event_type in ("created", "modified", "closed"):
            if not event.is_directory:
                self.watcher.queue("update", src)
            elif event.event_type == "created":
                self.watcher.queue("update", src)  # a directory moved in from outside
        elif event.event_type == "deleted":
            self.watcher.queue("delete", src)
        elif event.event_type == "moved":
            self.watcher.queue("move", src, Path(_text(event.dest_path)))


def _text(path: str | bytes) -> str:
    return os.fsdecode(path)  # a name that is not UTF-8 as the indexer's walk sees it
