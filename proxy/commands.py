"""``ragproxy index``, ``search``, ``status`` and ``mcp``."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from proxy.errors import ConfigError
from proxy.index.calibration import described_note, note_of
from proxy.index.indexer import ScanReport
from proxy.index.service import IndexService, open_index
from proxy.logging import configure_logging
from proxy.printable import printable
from proxy.progress import progress_for
from proxy.settings import Settings
from proxy.types import OCR_HEADING


def index(settings: Settings, args: argparse.Namespace) -> int:
    if args.collection and len(args.dirs) > 1:
        print("ragproxy: error: --collection names one folder's collection", file=sys.stderr)
        return 2
    for directory in args.dirs:
        if not Path(directory).is_dir():
            print(f"ragproxy: error: {directory} is not a directory", file=sys.stderr)
            return 2
    shown = progress_for(json=args.json)
    configure_logging("warning", shown.log_stream)
    service = IndexService(settings)
    reports: dict[str, ScanReport] = {}
    try:
        with shown:
            for directory in args.dirs:
                folder = (args.collection or "", Path(directory))
                (collection,) = service.add_folders([folder], move=args.move)
                name = collection.name
                if not service.store.claim_collection(collection.id):
                    raise ConfigError(
                        f"the collection {name!r} is being indexed by a ragproxy serving it, which "
                        "keeps it current; run this again once that one stops, or let it do the work"
                    )
                # a cheap walk first (directory listings, no file read), for the bar's total
                total = sum(1 for _ in service.indexer.walk(collection)) if shown.wants_total else None
                shown.start(name, total, "files")

                def scanned(report: ScanReport, name: str = name) -> None:
                    ocr = f"{name} ({report.ocr_pages} pages OCR)" if report.ocr_pages else name
                    shown.advance(report.visited, _scanned(name, report), label=ocr)

                report = service.indexer.scan(collection, progress=scanned, verify=args.verify)
                reports[name] = report
                verified = f"; {report.verified} verified, {report.changed} changed" if args.verify else ""
                shown.finish(f"{_scanned(name, report)}, {report.deleted} removed{verified}")
            before = _pending_vectors(service)
            pending = sum(before.values())
            embedded = dict.fromkeys(reports, 0)
            if pending:
                started = time.monotonic()
                shown.start("embedding", pending, "chunks")

                def embedding(done: int) -> None:
                    rate = done / max(time.monotonic() - started, 1e-9)
                    shown.advance(done, f"embedding: {done}/{pending} chunks ({rate:.1f}/s)")

                done = service.worker.embed_pending(embedding)
                shown.finish(f"embedding: {done}/{pending} chunks done")
                after = _pending_vectors(service)
                embedded = {name: before.get(name, 0) - after.get(name, 0) for name in reports}
    finally:
        service.close()
    if args.json:
        for name, report in reports.items():
            summary = {
                "collection": name,
                "indexed": report.indexed,
                "unchanged": report.unchanged,
                "skipped": report.skipped,
                "removed": report.deleted,
                "embedded": embedded[name],
            }
            if args.verify:
                summary |= {"verified": report.verified, "changed": report.changed}
            sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return 0


def _pending_vectors(service: IndexService) -> dict[str, int]:
    return {c["name"]: c["pending_vectors"] for c in service.store.status()["collections"]}


def _scanned(name: str, report: ScanReport) -> str:
    ocr = f", {report.ocr_pages} pages read by OCR" if report.ocr_pages else ""
    return f"{name}: {report.indexed} indexed, {report.unchanged} unchanged, {report.skipped} skipped{ocr}"


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
        where += f" [{hit.start}-{hit.end}]"
        if hit.heading == OCR_HEADING:
            where += f" ({OCR_HEADING})"
        elif hit.heading:
            where += f" § {hit.heading}"
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
        info["calibration"] = note_of(service)
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
        print(f"{printable(c['name'])}: {printable(c['root'])}")
        print(
            f"  {c['documents']} documents, {c['chunks']} chunks, "
            f"{c['pending_vectors']} waiting for vectors, last update {updated}"
        )
        for skip in c["skipped"]:
            print(f"  skipped {printable(skip['path'])}: {printable(skip['reason'])}")
    if info["calibration"]:
        for line in described_note(info["calibration"], info["embedder"]):
            print(printable(line))
    return 0


def mcp(settings: Settings, args: argparse.Namespace) -> int:
    """MCP over stdio, for the editor or agent that starts it: the index as it is (no watcher, no
    embedding), every collection. No API key: whoever can start this process can read the index
    file itself. Standard output carries the protocol, so logs go to standard error."""
    from proxy.api.mcp_tools import build_mcp

    configure_logging("warning", sys.stderr)
    service = open_index(settings)
    try:
        service.has_vectors()  # loads the embedder before the first question
        build_mcp(lambda ctx: (service, None), top_k=settings.top_k).run("stdio")
    finally:
        service.close()
    return 0
