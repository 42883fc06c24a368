"""Files → chunks → the store. A document's chunks and keyword index are written in one
transaction as soon as the file is read; vectors are filled in later by
``embedding.EmbeddingWorker``."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError
from proxy.index.chunker import chunk_document
from proxy.index.extract import Extractor, Limits, check_size
from proxy.index.files import hash_regular, read_regular
from proxy.index.ignore import IgnoreRules
from proxy.index.names import path_text
from proxy.index.store import (
    DocumentState,
    NewDocument,
    Store,
    content_hash,
    new_document,
)
from proxy.logging import get_logger
from proxy.plugins import isolated, large, loader_for
from proxy.printable import storable
from proxy.types import ReadOptions, SkipFile

log = get_logger("ragproxy.index")

# A scan writes documents in batches of this many files or characters, whichever comes first.
SCAN_BATCH_FILES = 64
SCAN_BATCH_CHARS = 2_000_000


def check_clash(name: str, root: Path, others: Iterable[tuple[str, Path]]) -> None:
    """A collection (name, resolved folder) may share neither its name nor its folder with
    another: two folders of one name would replace each other's documents, one folder under
    two names would be indexed twice."""
    for other, other_root in others:
        if other == name:
            raise ConfigError(f"two folders are named {name!r}: {other_root} and {root}")
        if other_root == root:
            raise ConfigError(f"{root} is given twice, as {other!r} and {name!r}")


@dataclass
class Collection:
    name: str
    root: Path  # resolved: symlinks and ".." cannot lead outside it
    id: int
    # the folders of other collections inside this one's root: theirs, not this one's
    nested: tuple[str, ...] = ()
    _rules: IgnoreRules = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rules = IgnoreRules(self.root)

    def relative(self, path: Path) -> str | None:
        """The path inside the root (POSIX form, as the index stores it: ``path_text``), or None
        if it is outside."""
        try:
            return path_text(path.relative_to(self.root).as_posix())
        except ValueError:
            return None

    def ignores(self, rel: str, is_dir: bool = False, specs: dict[str, Any] | None = None) -> bool:
        """The folders of collections nested in this one, and what ``IgnoreRules.ignores`` leaves
        out (``specs``: the ``.gitignore`` files this walk already looked up)."""
        if any(rel == inner or rel.startswith(inner + "/") for inner in self.nested):
            return True
        return self._rules.ignores(rel, is_dir, specs)


@dataclass
class ScanReport:
    indexed: int = 0
    unchanged: int = 0
    skipped: int = 0
    deleted: int = 0
    verified: int = 0  # indexed files read and hashed by a verifying scan
    changed: int = 0  # ... whose content differed from the index's
    visited: int = 0  # files the walk reached so far (what a progress bar counts against its total)
    ocr_pages: int = 0  # pages and images OCR read


class Indexer:
    def __init__(
        self,
        store: Store,
        *,
        max_file_bytes: int = 20 * 1024 * 1024,
        max_file_chunks: int = 10_000,
        limits: Limits | None = None,
        options: ReadOptions | None = None,
        chunk_tokens: int = 256,
        chunk_overlap: int = 32,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """``options``: how loaders read (OCR on or off, its page limit)."""
        self.store = store
        self.max_file_bytes = max_file_bytes
        self.max_file_chunks = max_file_chunks
        self.limits = limits or Limits()
        self.extractor = Extractor(self.limits, options, self._ocr_page)
        self.ocr_pages = 0  # pages OCR read since start
        self._scanning: tuple[ScanReport, Callable[[ScanReport], None], int] | None = None
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self.on_change = on_change or (lambda: None)
        self.collections: dict[str, Collection] = {}

    def add_collection(self, name: str, root: str | Path, *, move: bool = False) -> Collection:
        """Indexes the folder ``root`` as the collection ``name``. A folder inside another
        collection's folder is its own collection and is left out of the outer one, so a key
        scoped to the outer collection never reads it."""
        resolved = Path(os.path.realpath(root))
        if not resolved.is_dir():
            raise NotADirectoryError(f"{root} is not a directory")
        others = [(c.name, c.root) for c in self.collections.values() if (c.name, c.root) != (name, resolved)]
        check_clash(name, resolved, others)  # the same collection again is no clash
        stored = self.store.collection_id(name, path_text(str(resolved)), move=move)
        collection = Collection(name, resolved, stored)
        self.collections[name] = collection
        for outer in self.collections.values():
            outer.nested = tuple(
                inner.root.relative_to(outer.root).as_posix()
                for inner in self.collections.values()
                if inner.root != outer.root and inner.root.is_relative_to(outer.root)
            )
        return collection

    def collection_for(self, path: Path) -> Collection | None:
        """The collection a path belongs to: that of the innermost folder holding it."""
        best = None
        for collection in self.collections.values():
            if collection.relative(path) is not None and (
                best is None or len(collection.root.parts) > len(best.root.parts)
            ):
                best = collection
        return best

    def close(self) -> None:
        self.extractor.close()

    # -- one file ---------------------------------------------------------------------------------
    def index_file(self, collection: Collection, path: Path) -> str:
        """Brings one path up to date: "indexed", "unchanged", "skipped", "deleted" or "ignored"."""
        outcome = self._prepare(collection, path)
        if isinstance(outcome, str):
            return outcome
        return "indexed" if self._write(collection, [outcome]) else "skipped"

    def _write(self, collection: Collection, documents: list[NewDocument]) -> int:
        """Writes the documents; how many were written. If the batch fails, each is written alone,
        and one that fails alone is skipped with the reason."""
        try:
            self.store.replace_documents(collection.id, documents)
        except Exception as exc:
            if len(documents) == 1:
                self._failed(collection, documents[0].path, exc)
                return 0
            return sum(self._write(collection, [document]) for document in documents)
        for document in documents:
            log.info(
                "index.indexed", collection=collection.name, path=document.path, chunks=len(document.chunks)
            )
        self.on_change()
        return len(documents)

    def _prepare(self, collection: Collection, path: Path, *, verify: bool = False) -> str | NewDocument:
        """Everything but the write: an outcome if there is nothing to write, or the document.
        A file whose size and mtime are those indexed is taken as unchanged without reading it,
        unless ``verify``: then it is read and its content hash compared."""
        rel = collection.relative(path)
        if rel is None or rel == "." or collection.ignores(rel):
            return "ignored"
        state = self.store.document_state(collection.id, rel)
        return self._prepare_checked(collection, path, rel, state, verify=verify)

    def _prepare_checked(
        self, collection: Collection, path: Path, rel: str, state: DocumentState | None, *, verify: bool
    ) -> str | NewDocument:
        """``_prepare_file``, a file it fails on skipped with the reason (a loader's odd result, a
        store's refusal): one file never stops a scan."""
        try:
            return self._prepare_file(collection, path, rel, state, verify=verify)
        except Exception as exc:
            return self._failed(collection, rel, exc)

    def _prepare_file(
        self, collection: Collection, path: Path, rel: str, state: DocumentState | None, *, verify: bool
    ) -> str | NewDocument:
        """``_prepare`` of a path known not to be ignored, given what the index holds of it."""
        try:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                if collection.relative(Path(os.path.realpath(path))) is None:
                    return self._forget(collection, rel)  # a link out of the root is not followed
                info = os.stat(path)
        except OSError:
            return self._forget(collection, rel)
        if not stat.S_ISREG(info.st_mode):
            return self._forget(collection, rel)
        loader = loader_for(path)
        reads_large = loader is not None and large(loader)
        if info.st_size > self.max_file_bytes and not reads_large:
            return self._skip(
                collection, rel, f"{info.st_size} bytes, over the {self.max_file_bytes}-byte cap"
            )
        same_stat = state is not None and state.size == info.st_size and state.mtime == info.st_mtime
        if same_stat and not verify:
            return "unchanged"
        if loader is None:
            return self._skip(
                collection, rel, f"no loader for {path_text(path.suffix) or 'files without a suffix'}"
            )
        try:
            digest = (
                hash_regular(path) if reads_large else content_hash(read_regular(path, self.max_file_bytes))
            )
        except OSError as exc:
            return self._skip(collection, rel, f"unreadable: {exc.strerror}")
        if state and state.content_hash == digest:
            if not same_stat:
                self.store.touch_document(state.id, info.st_size, info.st_mtime)
            return "unchanged"
        try:
            if isolated(loader):
                document = self.extractor.load(loader, path, cut=reads_large)
            else:
                document = check_size(loader(path), self.limits.characters, cut=reads_large)
        except SkipFile as exc:
            return self._skip(collection, rel, str(exc))
        except Exception as exc:  # one bad file never stops the indexer
            return self._skip(collection, rel, f"loader failed: {type(exc).__name__}: {exc}"[:300])
        chunks = chunk_document(document, self.chunk_tokens, self.chunk_overlap)
        if not chunks:
            return self._skip(collection, rel, "no text")
        note = document.note
        if len(chunks) > self.max_file_chunks:
            if not reads_large:
                return self._skip(
                    collection, rel, f"{len(chunks)} chunks, over the {self.max_file_chunks}-chunk limit"
                )
            note = "; ".join(
                filter(None, (note, f"chunks after {self.max_file_chunks} of {len(chunks)} not indexed"))
            )
            chunks = chunks[: self.max_file_chunks]
        if note:
            log.warning("index.capped", collection=collection.name, path=rel, reason=storable(note))
        return new_document(
            rel, digest, info.st_size, info.st_mtime, getattr(loader, "__module__", "?"), chunks
        )

    def _ocr_page(self) -> None:
        """A page read by OCR: counted, and shown by the scan under way, if any."""
        self.ocr_pages += 1
        scanning = self._scanning
        if scanning is not None:
            report, progress, before = scanning
            report.ocr_pages = self.ocr_pages - before
            progress(report)

    def _skip(self, collection: Collection, rel: str, reason: str) -> str:
        reason = storable(reason)  # a loader's message may quote the name as it is on disk
        log.warning("index.skipped", collection=collection.name, path=rel, reason=reason)
        self.store.record_skip(collection.id, rel, reason)
        return "skipped"

    def _failed(self, collection: Collection, rel: str, exc: Exception) -> str:
        """An unexpected error on one file: logged with its traceback and recorded as the file's
        skip reason."""
        log.error("index.failed", collection=collection.name, path=rel, exc_info=exc)
        try:
            return self._skip(collection, rel, f"failed: {type(exc).__name__}: {exc}"[:300])
        except Exception:  # the store refuses even that: the log line is all there is
            return "skipped"

    def _forget(self, collection: Collection, rel: str) -> str:
        return "deleted" if self.store.delete_documents(collection.id, [rel]) else "ignored"

    # -- deletions and moves ----------------------------------------------------------------------
    def remove_path(self, collection: Collection, path: Path) -> int:
        """A deleted file, or a deleted directory and everything that was under it."""
        rel = collection.relative(path)
        if rel is None:
            return 0
        states = self.store.document_states(collection.id)
        gone = [p for p in states if p == rel or p.startswith(rel + "/")]
        return self.store.delete_documents(collection.id, gone)

    def move_path(self, collection: Collection, source: Path, dest: Path) -> None:
        """A rename: indexed documents keep their chunks and vectors under the new path. A move out
        of the root is a deletion; a move into an ignored name too."""
        old = collection.relative(source)
        target = self.collection_for(dest)
        new = target.relative(dest) if target else None
        if old is None:
            if target:
                self.scan_path(target, dest)
            return
        if target is not collection or new is None:
            self.remove_path(collection, source)
            if target:
                self.scan_path(target, dest)
            return
        states = self.store.document_states(collection.id)
        moved = [p for p in states if p == old or p.startswith(old + "/")]
        for path in moved:
            renamed = new + path[len(old) :]
            if collection.ignores(renamed):
                self.store.delete_documents(collection.id, [path])
            else:
                self.store.move_document(collection.id, path, renamed)
        self.scan_path(collection, dest)  # files that were not indexed before, or changed meanwhile

    # -- folders ----------------------------------------------------------------------------------
    def walk(self, collection: Collection, start: Path | None = None) -> Iterator[Path]:
        """Files under ``start`` (default: the root), not entering ignored directories or
        directory symlinks."""
        return (path for path, _ in self._walk(collection, start))

    def _walk(self, collection: Collection, start: Path | None) -> Iterator[tuple[Path, str]]:
        """``walk``'s files with their paths inside the root."""
        top = start or collection.root
        top_rel = collection.relative(top)
        if top_rel is None:
            return
        specs: dict[str, Any] = {}
        stack = [(top, top_rel)]
        while stack:
            directory, folder = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                path = directory / entry.name
                name = path_text(entry.name)
                rel = name if folder == "." else f"{folder}/{name}"
                if entry.is_dir(follow_symlinks=False):
                    if not collection.ignores(rel, is_dir=True, specs=specs):
                        stack.append((path, rel))
                elif not collection.ignores(rel, specs=specs):
                    yield path, rel

    def scan_path(self, collection: Collection, path: Path) -> ScanReport:
        if path.is_dir() and not path.is_symlink():
            return self.scan(collection, path)
        report = ScanReport()
        _count(report, self.index_file(collection, path))
        return report

    def scan(
        self,
        collection: Collection,
        start: Path | None = None,
        progress: Callable[[ScanReport], None] | None = None,
        *,
        verify: bool = False,
    ) -> ScanReport:
        """Reconciles the index with the folder: new and changed files indexed, vanished ones
        removed. Run at start-up, it catches what changed while the proxy was down. ``verify``
        also reads every indexed file and re-indexes those whose content hash differs, which
        catches an edit that kept the size and mtime; unchanged files are only read and hashed."""
        report = ScanReport()
        # read once: the state of each file the watcher writes meanwhile is at worst out of date,
        # which makes the scan read that file again
        states = self.store.document_states(collection.id)
        indexed = set(states) if verify else set()
        seen: set[str] = set()
        batch: list[NewDocument] = []
        batch_chars = 0

        def flush() -> None:
            nonlocal batch_chars
            if batch:
                written = self._write(collection, batch)
                report.indexed += written
                report.skipped += len(batch) - written
                batch.clear()
                batch_chars = 0
                if progress:
                    progress(report)

        self._scanning = (report, progress, self.ocr_pages) if progress else None
        try:
            for path, rel in self._walk(collection, start):
                report.visited += 1
                seen.add(rel)
                outcome = self._prepare_checked(collection, path, rel, states.get(rel), verify=verify)
                if rel in indexed and (outcome == "unchanged" or isinstance(outcome, NewDocument)):
                    report.verified += 1
                    report.changed += outcome != "unchanged"
                if isinstance(outcome, str):
                    _count(report, outcome)
                else:
                    batch.append(outcome)
                    batch_chars += sum(len(chunk.text) for chunk in outcome.chunks)
                    if len(batch) >= SCAN_BATCH_FILES or batch_chars >= SCAN_BATCH_CHARS:
                        flush()
                if progress:
                    progress(report)  # after every file, so a bar moves with the walk
        finally:
            self._scanning = None
        flush()
        prefix = collection.relative(start) if start else None
        vanished = [
            p
            for p in self.store.document_states(collection.id)
            if p not in seen and (not prefix or prefix == "." or p.startswith(prefix + "/"))
        ]
        report.deleted += self.store.delete_documents(collection.id, vanished)
        if start is None:
            self.store.prune_embedding_cache()
        return report


def _count(report: ScanReport, outcome: str) -> None:
    if outcome in ("indexed", "unchanged", "skipped", "deleted"):
        setattr(report, outcome, getattr(report, outcome) + 1)
