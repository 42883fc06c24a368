"""Reading files whose format can explode: a loader runs in a worker process with a memory limit
and a timeout, so one file (a 3 MB .docx that inflates to a gigabyte, a PDF that takes minutes)
can neither exhaust the server's memory nor stall the watcher. The worker is started on first
use and kept; one that ran out of memory, overran its time or died is replaced."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from proxy.logging import get_logger
from proxy.plugins import Loader
from proxy.types import Document, SkipFile

log = get_logger("ragproxy.index")


@dataclass(frozen=True, slots=True)
class Limits:
    memory: int = 1024 * 1024 * 1024  # bytes of address space for the worker
    seconds: float = 120.0  # for one file
    characters: int = 10_000_000  # of extracted text per file


class Extractor:
    """``load(loader, path)`` in the worker process; ``SkipFile`` with the reason when the file
    is over a limit or the loader fails."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self.peak_rss = 0  # bytes: the most any reader process has held, as it last reported

    def load(self, loader: Loader, path: Path, *, cut: bool = False) -> Document:
        """``cut``: text past the limit is cut at a section (``Document.cut``) instead of the
        file skipped."""
        try:
            request = pickle.dumps((loader, str(path), self.limits.characters, cut))
        except (pickle.PicklingError, AttributeError, TypeError):  # a loader made on the fly
            return check_size(loader(path), self.limits.characters, cut=cut)
        with self._lock:
            conn = self._start()
            conn.send_bytes(request)
            if not conn.poll(self.limits.seconds):
                self._stop()
                raise SkipFile(f"reading it took over {self.limits.seconds:g} s")
            try:
                status, value, peak = conn.recv()
                self.peak_rss = max(self.peak_rss, peak)
            except (EOFError, OSError):
                self._stop()
                raise SkipFile(
                    f"the reader stopped while reading it (over the {self.limits.memory >> 20} MB memory "
                    "limit or a crash in the loader)"
                ) from None
        if status == "ok":
            return value  # type: ignore[no-any-return]
        if status == "memory":
            with self._lock:
                self._stop()  # its heap is in pieces: a fresh one for the next file
            raise SkipFile(f"reading it needs more than the {self.limits.memory >> 20} MB memory limit")
        raise SkipFile(value)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _start(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        self._stop()
        context = multiprocessing.get_context("spawn")  # no copy of the server's threads or memory
        ours, theirs = context.Pipe()
        process = context.Process(
            target=serve, args=(theirs, self.limits.memory), name="ragproxy-reader", daemon=True
        )
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
        log.debug("index.reader_started", pid=process.pid)
        return ours

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
        self._process = self._conn = None


def check_size(document: Document, characters: int, *, cut: bool = False) -> Document:
    if len(document.text) <= characters:
        return document
    if cut:
        return document.cut(characters, f"over the {characters}-character limit")
    raise SkipFile(f"{len(document.text)} characters of text, over the {characters}-character limit")


def serve(conn: Connection, memory: int) -> None:
    """The worker: one file at a time, until the pipe closes."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    except (ImportError, ValueError, OSError):  # no such limit on this platform
        pass
    while True:
        try:
            loader, path, characters, cut = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        reply: tuple[str, Any]
        try:
            reply = ("ok", check_size(loader(Path(path)), characters, cut=cut))
        except SkipFile as exc:
            reply = ("skip", str(exc))
        except MemoryError:
            reply = ("memory", None)
        except Exception as exc:  # one bad file never stops the indexer
            # C parsers report a failed allocation in their own words ("XMLSyntaxError: unknown
            # error"): a loader that failed near the limit ran out of memory
            near_limit = _peak_bytes() > 0.6 * memory
            reply = (
                ("memory", None)
                if near_limit
                else ("skip", f"loader failed: {type(exc).__name__}: {exc}"[:300])
            )
        try:
            conn.send((*reply, _peak_bytes()))
        except MemoryError:
            conn.send(("memory", None, _peak_bytes()))
        if reply[0] == "memory":
            return


def _peak_bytes() -> int:
    """This process's peak resident memory. Linux's ``ru_maxrss`` is carried across the exec that
    started the process, so it can report the parent's peak: the kernel's high-water mark of this
    process's own memory (``VmHWM``) is read first."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
