"""Reading files whose format can explode: a loader runs in a worker process with a memory limit
and a timeout, so one file (a 3 MB .docx that inflates to a gigabyte, a PDF that takes minutes)
can neither exhaust the server's memory nor stall the watcher. The worker is started on first
use and kept; one that ran out of memory, overran its time or died is replaced.

With OCR on, a file that a loader runs OCR on may use ``OCR_MEMORY`` more address space (the
OCR engine's libraries, models and one page's work), and its time limit starts again after each
page OCR reads, so a scanned PDF of many pages is bounded by the OCR page limit, not cut at the
first limit. Other files keep the limit, over what the loaded engine holds."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from proxy.logging import get_logger
from proxy.plugins import Loader
from proxy.types import Document, ReadOptions, SkipFile, reading

log = get_logger("ragproxy.index")

OCR_MEMORY = 1024 * 1024 * 1024  # bytes of address space the OCR engine adds (it needs ~950 MB in all)


@dataclass(frozen=True, slots=True)
class Limits:
    memory: int = 1024 * 1024 * 1024  # bytes of address space for the worker
    seconds: float = 120.0  # for one file
    characters: int = 10_000_000  # of extracted text per file


class Extractor:
    """``load(loader, path)`` in the worker process; ``SkipFile`` with the reason when the file
    is over a limit or the loader fails."""

    def __init__(
        self,
        limits: Limits,
        options: ReadOptions | None = None,
        on_ocr_page: Callable[[], None] | None = None,
    ) -> None:
        """``on_ocr_page``: called (in the caller's thread) after each page OCR reads."""
        self.limits = limits
        self.options = options or ReadOptions()
        self.ocr_memory = OCR_MEMORY if self.options.ocr else 0
        self.on_ocr_page = on_ocr_page or (lambda: None)
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self.peak_rss = 0  # bytes: the most any reader process has held, as it last reported

    def load(self, loader: Loader, path: Path, *, cut: bool = False) -> Document:
        """``cut``: text past the limit is cut at a section (``Document.cut``) instead of the
        file skipped."""
        try:
            request = pickle.dumps((loader, str(path), self.limits.characters, cut, self.options))
        except (pickle.PicklingError, AttributeError, TypeError):  # a loader made on the fly
            with reading(self.options, self.on_ocr_page):
                return check_size(loader(path), self.limits.characters, cut=cut)
        ocr = False
        with self._lock:
            conn = self._start()
            conn.send_bytes(request)
            while True:
                if not conn.poll(self.limits.seconds):
                    self._stop()
                    raise SkipFile(f"reading it took over {self.limits.seconds:g} s")
                try:
                    status, value, peak = conn.recv()
                    self.peak_rss = max(self.peak_rss, peak)
                except (EOFError, OSError):
                    self._stop()
                    raise SkipFile(
                        f"the reader stopped while reading it (over the {self._memory_text(ocr)} memory "
                        "limit or a crash in the loader)"
                    ) from None
                if status == "ocr":  # OCR starts: the file may use its share of memory
                    ocr = True
                elif status == "page":
                    self.on_ocr_page()  # and the time limit starts again
                else:
                    break
        if status == "ok":
            return value  # type: ignore[no-any-return]
        if status == "memory":
            with self._lock:
                self._stop()  # its heap is in pieces: a fresh one for the next file
            raise SkipFile(f"reading it needs more than the {self._memory_text(ocr)} memory limit")
        raise SkipFile(value)

    def _memory_text(self, ocr: bool) -> str:
        extra = f" (and {self.ocr_memory >> 20} MB for OCR)" if ocr else ""
        return f"{self.limits.memory >> 20} MB{extra}"

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
            target=serve,
            args=(theirs, self.limits.memory, self.ocr_memory),
            name="ragproxy-reader",
            daemon=True,
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


def serve(conn: Connection, memory: int, ocr_memory: int = 0) -> None:
    """The worker: one file at a time, until the pipe closes. Its address space is limited to
    ``memory`` bytes, over what the OCR engine holds once loaded; a file a loader runs OCR on
    may use ``ocr_memory`` bytes more."""
    limit = _AddressSpace(memory, ocr_memory)
    while True:
        try:
            loader, path, characters, cut, options = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        reply: tuple[str, Any]
        try:
            with reading(options, lambda: conn.send(("page", None, 0)), lambda: limit.grow(conn)):
                reply = ("ok", check_size(loader(Path(path)), characters, cut=cut))
        except SkipFile as exc:
            reply = ("skip", str(exc))
        except MemoryError:
            reply = ("memory", None)
        except Exception as exc:  # one bad file never stops the indexer
            # C parsers report a failed allocation in their own words ("XMLSyntaxError: unknown
            # error"): a loader that failed near the limit ran out of memory
            near_limit = _peak_bytes() > 0.6 * limit.soft
            reply = (
                ("memory", None)
                if near_limit
                else ("skip", f"loader failed: {type(exc).__name__}: {exc}"[:300])
            )
        limit.shrink()
        try:
            conn.send((*reply, _peak_bytes()))
        except MemoryError:
            conn.send(("memory", None, _peak_bytes()))
        if reply[0] == "memory":
            return


class _AddressSpace:
    """The worker's RLIMIT_AS: the hard limit leaves room for OCR, the soft one is ``memory``
    over what OCR left mapped (its engine, loaded once), raised to the hard one while a file is
    OCR'd."""

    def __init__(self, memory: int, ocr_memory: int) -> None:
        self.memory, self.hard, self.soft = memory, memory + ocr_memory, memory
        self.before_ocr: int | None = None  # address space in use when OCR first started
        self.grown = False
        self._set(memory)

    def grow(self, conn: Connection) -> None:
        if self.before_ocr is None:
            self.before_ocr = _address_space()
        self.grown = True
        self._set(self.hard)
        conn.send(("ocr", None, 0))

    def shrink(self) -> None:
        if self.grown and self.before_ocr is not None:
            self.grown = False
            held = max(0, _address_space() - self.before_ocr)  # the engine, now loaded
            self._set(min(self.hard, self.memory + held))

    def _set(self, soft: int) -> None:
        self.soft = soft
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (soft, self.hard))
        except (ImportError, ValueError, OSError):  # no such limit on this platform
            pass


def _address_space() -> int:
    """Bytes of address space this process has mapped (0 where /proc cannot tell)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


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
