"""Retrieval quality on real data: SciFact (English, BEIR) and CMRC 2018 dev (Chinese).

Both corpora are indexed the way a user's folder is: every document written as one file into a
folder in the cache directory (SciFact: ``# title`` then the abstract, as Markdown; CMRC: each
unique paragraph as a ``.txt``), then ``ragproxy index`` (scan, then e5 embedding of every chunk).
Embedding SciFact with the in-process e5 embedder takes over an hour here, so each index is built
once and reused (``~/.cache/ragproxy-bench/eval/``; ``--rebuild`` forces it).

    .venv/bin/python bench/retrieval_eval.py build            # both indexes (resumable)
    .venv/bin/python bench/retrieval_eval.py eval [--split test|train] [--set scifact|cmrc|both]

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
import json  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

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
        db = args.cache_dir / f"{name}.db"
        if args.rebuild:
            for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                path.unlink(missing_ok=True)
        count = writer(folder, args.data)
        print(f"{name}: {count} documents in {folder}", flush=True)
        command = [sys.executable, "-m", "proxy", "index", str(folder), "--collection", name, "--db", str(db)]
        subprocess.run(command, check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=("build", "eval"))
    parser.add_argument("--set", choices=("scifact", "cmrc", "both"), default="both")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cache-dir", type=Path, default=CACHE)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    if args.step == "build":
        build(args)


if __name__ == "__main__":
    main()
