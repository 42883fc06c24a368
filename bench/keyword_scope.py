"""Keyword search limited to collections: latency and quality, against another commit of the
product (``--baseline``, main by default) measured in the same run.

One SQLite index (built once, by the baseline's code, in ``~/.cache/ragproxy-bench/scope/``;
the code measured upgrades it in place) holds four collections: ``scifact`` (SciFact's 5,183
abstracts), ``cmrc`` (CMRC 2018 dev's 848 paragraphs), ``fastapi-en`` and ``tidb-zh`` (the docs
folders), and ``bulk``, the docs folders' chunks again with a " (copy N)" suffix up to
``--size`` chunks in all. A second index holds ``scifact`` and ``cmrc`` alone: what their
searches score with nothing else beside them.

Each of the two commits runs in its own process (the baseline from a temporary git worktree);
the queries alternate between them. Per query, the keyword part of a search as the product runs
it (``keyword_terms``, ``search_keyword`` with a pool of 50, ``keyword_idf``), limited to the
query's collection and not limited. Quality: SciFact test nDCG@10 / recall@100 and CMRC recall@1
/ @5 of the keyword ranking limited to its collection, beside the same search of the index that
holds them alone.

    .venv/bin/python bench/keyword_scope.py [--baseline main] [--queries 300] [--size 100000]
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

DATA = Path(ROOT).parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "ragproxy-bench" / "scope"
POOL = 50


def worker(db: str) -> None:
    """Answers one JSON request a line: a query, its collections; the keyword part's time and
    the documents it ranked."""
    sys.path.insert(0, os.getcwd())
    from proxy.index.store import open_store

    store = open_store(db)
    scoped_idf = "collections" in inspect.signature(store.keyword_idf).parameters
    for line in sys.stdin:
        request = json.loads(line)
        query, collections = request["query"], request["collections"]
        started = time.perf_counter()
        terms = store.keyword_terms(query)
        hits = store.search_keyword(query, POOL, collections, terms)
        if hits:
            if scoped_idf:
                store.keyword_idf(query, terms, collections)
            else:
                store.keyword_idf(query, terms)
        seconds = time.perf_counter() - started
        ranked = list(dict.fromkeys(Path(hit.path).stem for hit in hits))
        print(json.dumps({"seconds": seconds, "ranked": ranked}), flush=True)


class Worker:
    def __init__(self, code: Path, db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", str(db)],
            cwd=code,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(code)},
        )

    def ask(self, query: str, collections: list[str] | None) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"query": query, "collections": collections}) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


def build(code: Path, db: Path, size: int, alone: bool) -> None:
    """The index, made by the code at ``code`` (in its own process)."""
    script = f"""
import sys
sys.path.insert(0, {str(code)!r}); sys.path.insert(0, {os.path.join(ROOT, "bench")!r})
from pathlib import Path
from proxy.index.service import IndexService
from proxy.index.store.common import content_hash
from proxy.logging import configure_logging
from proxy.settings import Settings
from proxy.types import Chunk
from retrieval_eval import write_cmrc, write_scifact
configure_logging("warning", sys.stderr)
data, cache = Path({str(DATA)!r}), Path({str(CACHE)!r})
write_scifact(cache / "scifact", data)
write_cmrc(cache / "cmrc", data)
service = IndexService(Settings(db={str(db)!r}))
folders = [("scifact", cache / "scifact"), ("cmrc", cache / "cmrc")]
if not {alone!r}:
    folders += [(name, data / "docs" / name) for name in ("fastapi-en", "tidb-zh")]
for name, folder in folders:
    service.indexer.scan(service.indexer.add_collection(name, folder))
store = service.store
if not {alone!r}:
    bulk = store.collection_id("bulk", str(cache / "bulk"))
    db = store.reader()
    rows = db.execute("SELECT c.text, c.heading, d.path, c.ordinal FROM chunks c JOIN documents d "
        "ON d.id = c.document_id JOIN collections k ON k.id = d.collection_id "
        "WHERE k.name IN ('fastapi-en', 'tidb-zh') ORDER BY c.id").fetchall()
    total, copy = db.execute("SELECT count(*) FROM chunks").fetchone()[0], 0
    while total < {size}:
        copy += 1
        by_path = {{}}
        for text, heading, path, ordinal in rows[: {size} - total]:
            by_path.setdefault(path, []).append(
                Chunk(len(by_path.get(path, [])), f"{{text}} (copy {{copy}})", 0, len(text), heading, None))
        for path, chunks in by_path.items():
            store.replace_document(bulk, f"{{path}}#{{copy}}", digest=content_hash(path + str(copy)),
                size=1, mtime=0.0, loader="bench", chunks=chunks)
            total += len(chunks)
service.close()
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=code)


def percentiles(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{1000 * statistics.median(ordered):.1f} / {1000 * p95:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", default="main", help="the commit measured against")
    parser.add_argument("--queries", type=int, default=300, help="of each set")
    parser.add_argument("--size", type=int, default=100_000, help="chunks in the mixed index")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from retrieval_eval import cmrc_questions, ndcg_at, recall_at, scifact_queries

    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ragproxy-baseline-") as folder:
        baseline = Path(folder) / "code"
        subprocess.run(
            ["git", "-C", ROOT, "worktree", "add", "--detach", str(baseline), args.baseline],
            check=True,
            capture_output=True,
        )
        revision = subprocess.run(
            ["git", "-C", str(baseline), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        try:
            mixed, alone = CACHE / f"mixed-{args.size}.db", CACHE / "alone.db"
            for db, only in ((mixed, False), (alone, True)):
                if not db.exists():
                    print(f"building {db} with {revision}'s code ...", flush=True)
                    started = time.perf_counter()
                    build(baseline, db, args.size, only)
                    print(f"  {time.perf_counter() - started:.0f} s", flush=True)
            run(args, baseline, revision, mixed, alone, scifact_queries, cmrc_questions, ndcg_at, recall_at)
        finally:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", str(baseline)], check=False)


def run(
    args: argparse.Namespace, baseline: Path, revision: str, mixed: Path, alone: Path, *helpers: Any
) -> None:
    scifact_queries, cmrc_questions, ndcg_at, recall_at = helpers
    texts, qrels = scifact_queries(DATA, "test")
    scifact = [(texts[q], "scifact", qrels[q]) for q in list(texts)[: args.queries]]
    cmrc = [(q, "cmrc", {f"{n:04d}": 1}) for q, n, _ in cmrc_questions(DATA)[: args.queries]]
    workers = {"new": Worker(Path(ROOT), mixed), "baseline": Worker(baseline, mixed)}
    reference = Worker(Path(ROOT), alone)
    times: dict[tuple[str, str, str], list[float]] = {}
    quality: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for query, collection, relevant in [x for pair in zip(scifact, cmrc, strict=False) for x in pair]:
            answers = {}
            for scope in ("limited", "all"):
                chosen = [collection] if scope == "limited" else None
                for name, worker in workers.items():  # alternating, so that drift hits both alike
                    answer = worker.ask(query, chosen)
                    times.setdefault((name, collection, scope), []).append(answer["seconds"])
                    if scope == "limited":
                        answers[name] = answer["ranked"]
            answers["alone"] = reference.ask(query, [collection])["ranked"]
            for name, ranked in answers.items():
                if collection == "scifact":
                    metrics = (ndcg_at(ranked, relevant, 10), recall_at(ranked, relevant, 100))
                else:
                    metrics = (recall_at(ranked, relevant, 1), recall_at(ranked, relevant, 5))
                quality.setdefault((name, collection), []).append(metrics)
    finally:
        for worker in (*workers.values(), reference):
            worker.close()
    print(f"\nkeyword part, p50 / p95 ms ({args.queries} queries of each set, {mixed.name}):")
    print("| queries | search | baseline " + revision + " | this code | p50 ratio |")
    print("|---|---|---|---|---|")
    for collection in ("scifact", "cmrc"):
        for scope in ("limited", "all"):
            old, new = times[("baseline", collection, scope)], times[("new", collection, scope)]
            label = f"limited to `{collection}`" if scope == "limited" else "every collection"
            ratio = statistics.median(new) / statistics.median(old)
            print(f"| {collection} | {label} | {percentiles(old)} | {percentiles(new)} | {ratio:.2f}x |")
    print("\nquality of the search limited to its collection:")
    print("| set | metric | baseline " + revision + " (mixed index) | this code (mixed index) | alone |")
    print("|---|---|---|---|---|")
    for collection, names in (("scifact", ("nDCG@10", "recall@100")), ("cmrc", ("recall@1", "recall@5"))):
        for i, metric in enumerate(names):
            cells = [
                statistics.mean(m[i] for m in quality[(n, collection)]) for n in ("baseline", "new", "alone")
            ]
            print(f"| {collection} | {metric} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
