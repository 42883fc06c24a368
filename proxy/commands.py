"""``ragproxy index``, ``search``, ``status`` and ``mcp``."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from proxy.index.indexer import ScanReport
from proxy.index.service import IndexService, open_index
from proxy.logging import configure_logging
from proxy.settings import Settings


class Progress:
    """One status line on stderr: rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, text: str, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (0.1 if self.tty else 5):
            return
        self.last = now
        if self.tty:
            sys.stderr.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def index(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging("warning", sys.stderr)
    service = IndexService(settings)
    progress = Progress()
    try:
        if args.collection and len(args.dirs) > 1:
            print("ragproxy: error: --collection names one folder's collection", file=sys.stderr)
            return 2
        for directory in args.dirs:
            path = Path(directory)
            if not path.is_dir():
                print(f"ragproxy: error: {directory} is not a directory", file=sys.stderr)
                return 2
            (collection,) = service.add_folders([(args.collection or "", path)], move=args.move)
            name = collection.name

            def shown(report: ScanReport, name: str = name) -> None:
                progress.show(_scanned(name, report))

            report = service.indexer.scan(collection, progress=shown, verify=args.verify)
            verified = f"; {report.verified} verified, {report.changed} changed" if args.verify else ""
            progress.show(f"{_scanned(name, report)}, {report.deleted} removed{verified}", final=True)
        pending = sum(c["pending_vectors"] for c in service.store.status()["collections"])
        if pending:
            started = time.monotonic()

            def embedded(done: int) -> None:
                rate = done / max(time.monotonic() - started, 1e-9)
                progress.show(f"embedding: {done}/{pending} chunks ({rate:.1f}/s)")

            done = service.worker.embed_pending(embedded)
            progress.show(f"embedding: {done}/{pending} chunks done", final=True)
    finally:
        service.close()
    return 0


def _scanned(name: str, report: ScanReport) -> str:
    return f"{name}: {report.indexed} indexed, {report.unchanged} unchanged, {report.skipped} skipped"


def search(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging("warning", sys.stderr)
    service = open_index(settings)
    try:
        hits = service.search(args.query, args.k, args.collection, args.mode)
    finally:
        service.close()
    if args.json:
        sys.stdout.write(
            orjson.dumps([_hit_json(h) for h in hits], option=orjson.OPT_INDENT_2).decode() + "\n"
        )
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, start=1):
        where = f"{hit.collection}:{hit.path}" + (f" p.{hit.page}" if hit.page else "")
        where += f" [{hit.start}-{hit.end}]" + (f" § {hit.heading}" if hit.heading else "")
        print(f"[{rank}] {hit.score:.4f}  {where}")
        print("    " + " ".join(hit.text.split())[:300])
    return 0


def _hit_json(hit: Any) -> dict[str, Any]:
    return {
        "score": hit.score,
        "collection": hit.collection,
        "path": hit.path,
        "start": hit.start,
        "end": hit.end,
        "heading": hit.heading,
        "page": hit.page,
        "text": hit.text,
    }


def status(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging("warning", sys.stderr)
    service = open_index(settings)
    try:
        info = service.store.status()
    finally:
        service.close()
    if args.json:
        sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"index: {info['db']} ({info['db_bytes'] / 1e6:.1f} MB)")
    print(
        f"embedder: {info['embedder'] or 'none yet'}"
        + (f" ({info['dim']} dimensions)" if info["dim"] else "")
    )
    for c in info["collections"]:
        updated = (
            datetime.fromtimestamp(c["last_update"], UTC).isoformat(timespec="seconds")
            if c["last_update"]
            else "never"
        )
        print(f"{c['name']}: {c['root']}")
        print(
            f"  {c['documents']} documents, {c['chunks']} chunks, "
            f"{c['pending_vectors']} waiting for vectors, last update {updated}"
        )
        for skip in c["skipped"]:
            print(f"  skipped {skip['path']}: {skip['reason']}")
    return 0


def mcp(settings: Settings, args: argparse.Namespace) -> int:
    """MCP over stdio, for the editor or agent that starts it: the index as it is (no watcher, no
    embedding), every collection. No API key: whoever can start this process can read the index
    file itself. Standard output carries the protocol, so logs go to standard error."""
    from proxy.api.mcp import build_mcp

    configure_logging("warning", sys.stderr)
    service = open_index(settings)
    try:
        service.has_vectors()  # loads the embedder before the first question
        build_mcp(lambda ctx: (service, None), top_k=settings.top_k).run("stdio")
    finally:
        service.close()
    return 0
