"""Keyword search over Chinese text with SQLite FTS5: which tokenization works, measured on CMRC 2018.

Corpus: the unique ``context`` paragraphs of the CMRC 2018 dev set (SQuAD format, 848 passages); queries:
all its questions (3,219), each relevant to exactly its own paragraph. Every candidate is a contentless
FTS5 table over the passages (built in a fresh on-disk database through ``sqlean``, the SQLite the
product uses), queried with OR semantics and ranked by ``bm25()``, top 10 retrieved:

  a  unicode61     ``unicode61`` as is; query = OR of the question's unicode61-style tokens.
  b  trigram       ``trigram`` tokenizer; query = OR of the character trigrams of each run of letters/digits.
  c  cjk-uni       every CJK ideograph/kana a token of its own (``cjk_spaced``: a space on every boundary
                   that touches a CJK character), ``porter unicode61``; query = OR of adjacent-character
                   bigrams of each CJK run as phrases ("熊 猫") plus the non-CJK words (``cjk_bigram_query``).
  c0 cjk-uni-lit   as c, but a space only *between two* CJK characters (so "1949年" or "iPhone手" stay one
                   token): shows why c separates CJK from adjacent letters and digits.
  c-stop           ragproxy's own code (``proxy/index/textsearch.py``): index as c; query as c minus the
                   bigrams that contain one of its ``STOP_CHARS`` (particles, question words:
                   的了吗呢吧么哪谁几什).
  d  jieba         CJK runs replaced by ``jieba.lcut_for_search`` terms joined by spaces (non-CJK text left as
                   is, ``jieba_spaced``), ``porter unicode61``; query = OR of ``jieba.lcut`` terms of the CJK
                   runs minus ``STOPWORDS``, plus the non-CJK words (``jieba_query``).
  e  cjk-uni+jieba one table with the c and d texts as two columns, one query
                   ``{uni}: (c-stop query) OR {seg}: (d query)``.

Measured for each: recall@1, recall@5 and MRR@10 of the question's own paragraph; answer@5 (one of the
question's answer texts occurs in a top-5 passage); build time (preprocessing + inserts + commit); index
size (``dbstat`` pages of the FTS5 shadow tables); per-query latency p50/p95 (query building, including
jieba segmentation, plus the FTS5 query and fetching the 10 rowids). It also reports jieba's dictionary
load time and checks that English (and mixed) text indexed through the c and d preprocessing is still found by
an English word query with porter stemming (e.g. "runs" finds "running").

    .venv/bin/python bench/fts_chinese.py [path/to/cmrc2018/dev.json]

The default data path is ``../shared/data/cmrc2018/dev.json`` relative to the repository root.
Needs ``sqlean.py`` and ``jieba`` (``.venv/bin/pip install sqlean.py jieba``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import jieba
import sqlean as sqlite3

from proxy.index.textsearch import CJK_CLASS, index_text, match_query

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cmrc2018" / "dev.json"
TOP_K = 10

# Characters written without spaces between words: CJK Unified Ideographs (basic block, extensions A-H),
# CJK Compatibility Ideographs (and their supplement), the ideographic iteration mark and number zero
# (U+3005-U+3007), hiragana and katakana (U+3040-U+30FF, U+31F0-U+31FF). unicode61 treats all of them as
# token characters, so without help a whole clause becomes one token. Hangul is written with spaces and
# is left alone; CJK punctuation (，。《》？) is already a separator for unicode61.
CJK_RUN = re.compile(f"[{CJK_CLASS}]+")
# A CJK run, or a run of other letters/digits (the non-CJK words unicode61 would produce; "_" separates).
QUERY_PIECE = re.compile(f"(?P<cjk>[{CJK_CLASS}]+)|(?P<word>[^\\W_{CJK_CLASS}]+)")
# Word runs for the baseline and trigram queries (CJK included).
WORD_RUN = re.compile(r"[^\W_]+")

# Question words and particles dropped from jieba queries (after segmentation, exact term match).
STOPWORDS = frozenset(
    "的 了 是 吗 呢 吧 啊 么 在 和 与 及 或 也 都 而 被 把 将 对 从 由 于 之 其 这 那 有 为 以 等 个 中 上"
    " 哪 谁 几 何 啥 多少 什么 怎么 怎样 如何 为什么 哪个 哪些 哪里 哪儿 哪位 哪年 是否 是不是 请问"
    " 一个 这个 那个".split()
)

logging.getLogger("jieba").setLevel(logging.WARNING)
jieba.setLogLevel(logging.WARNING)


# --- tokenizer helpers (meant to move into the product's indexer) ---------------------------------------


def fts_phrase(text: str) -> str:
    """One FTS5 string literal: double-quoted, embedded quotes doubled."""
    return '"' + text.replace('"', '""') + '"'


def or_query(terms: Iterable[str]) -> str:
    """OR of quoted terms, duplicates and empty terms dropped; "" when nothing is left."""
    seen: dict[str, None] = {}
    for term in terms:
        if term.strip():
            seen.setdefault(term, None)
    return " OR ".join(fts_phrase(term) for term in seen)


def cjk_spaced(text: str) -> str:
    """Index text for c and c-stop: the product's ``index_text`` (a space on each side of every CJK
    character, everything else untouched)."""
    return index_text(text)


def cjk_spaced_between(text: str) -> str:
    """The literal variant c0: a space only between two adjacent CJK characters."""
    return re.sub(f"(?<=[{CJK_CLASS}])(?=[{CJK_CLASS}])", " ", text)


def cjk_bigram_query(text: str) -> str:
    """Query for c: the product's ``match_query`` with no stop characters."""
    return match_query(text, frozenset()) or ""


def cjk_bigram_query_stop(text: str) -> str:
    """Query for c-stop: the product's ``match_query`` (pairs with a stop character dropped)."""
    return match_query(text) or ""


def jieba_spaced(text: str) -> str:
    """Index text for d: each CJK run replaced by its ``jieba.lcut_for_search`` terms joined by spaces."""
    return CJK_RUN.sub(lambda m: " " + " ".join(jieba.lcut_for_search(m.group())) + " ", text)


def jieba_query(text: str) -> str:
    """FTS5 query for d: ``jieba.lcut`` terms of each CJK run minus ``STOPWORDS``, plus non-CJK words."""
    terms: list[str] = []
    for match in QUERY_PIECE.finditer(text):
        run = match.group("cjk")
        if run is None:
            terms.append(match.group())
        else:
            terms.extend(t for t in jieba.lcut(run) if t not in STOPWORDS)
    return or_query(terms)


def combined_query(text: str) -> str:
    """Query for e: the c query on column ``uni`` OR the d query on column ``seg``."""
    parts = [(column, make(text)) for column, make in (("uni", cjk_bigram_query_stop), ("seg", jieba_query))]
    return " OR ".join(f"{{{column}}}: ({query})" for column, query in parts if query)


def unicode61_query(text: str) -> str:
    """Baseline query: OR of the question's letter/digit runs (what unicode61 would make of it)."""
    return or_query(WORD_RUN.findall(text))


def trigram_query(text: str) -> str:
    """Trigram query: OR of the character trigrams inside each letter/digit run (shorter runs dropped)."""
    return or_query(run[i : i + 3] for run in WORD_RUN.findall(text) for i in range(len(run) - 2))


# --- benchmark --------------------------------------------------------------------------------------------


@dataclass
class Candidate:
    name: str
    tokenize: str
    columns: dict[str, Callable[[str], str]]  # column name -> index-text preprocessing
    query: Callable[[str], str]


@dataclass
class Result:
    name: str
    build_s: float
    size_bytes: int
    ranks: list[int | None] = field(default_factory=list)  # 1-based rank of the own paragraph
    answer_at5: list[bool] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    empty: int = 0


def load(path: Path) -> tuple[list[str], list[tuple[str, int, list[str]]]]:
    """Unique passages and (question, passage index, answer texts) triples."""
    data = json.loads(path.read_text(encoding="utf-8"))
    passages: list[str] = []
    index: dict[str, int] = {}
    questions: list[tuple[str, int, list[str]]] = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            doc = index.setdefault(context, len(passages))
            if doc == len(passages):
                passages.append(context)
            for qa in paragraph["qas"]:
                answers = [a["text"].strip() for a in qa["answers"] if a["text"].strip()]
                questions.append((qa["question"], doc, answers))
    return passages, questions


def fts_size(db: sqlite3.Connection) -> int:
    """Bytes of all pages of the FTS5 table and its shadow tables."""
    row = db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'fts%'").fetchone()
    return int(row[0] or 0)


def build(db: sqlite3.Connection, candidate: Candidate, passages: list[str]) -> float:
    columns = ", ".join(candidate.columns)
    started = time.perf_counter()
    db.execute(
        f"CREATE VIRTUAL TABLE fts USING fts5({columns}, content='', tokenize=\"{candidate.tokenize}\")"
    )
    marks = ", ".join("?" * (len(candidate.columns) + 1))
    with db:
        db.executemany(
            f"INSERT INTO fts(rowid, {columns}) VALUES ({marks})",
            ([i, *(prep(p) for prep in candidate.columns.values())] for i, p in enumerate(passages)),
        )
    return time.perf_counter() - started


def search(db: sqlite3.Connection, query: str) -> list[int]:
    sql = f"SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY bm25(fts) LIMIT {TOP_K}"
    return [row[0] for row in db.execute(sql, (query,))]


def run(candidate: Candidate, passages: list[str], questions: list[tuple[str, int, list[str]]]) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(str(Path(tmp) / "fts.db"))
        try:
            build_s = build(db, candidate, passages)
            result = Result(candidate.name, build_s, fts_size(db))
            for question, doc, answers in questions:
                started = time.perf_counter()
                query = candidate.query(question)
                hits = search(db, query) if query else []
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                result.empty += not query
                result.ranks.append(hits.index(doc) + 1 if doc in hits else None)
                top5 = [passages[h] for h in hits[:5]]
                result.answer_at5.append(any(a in p for a in answers for p in top5))
        finally:
            db.close()
    return result


def english_check(prep: Callable[[str], str], query: Callable[[str], str]) -> bool:
    """An English (and a mixed) sentence indexed through ``prep`` is found by stemmed English queries."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE VIRTUAL TABLE fts USING fts5(body, content='', tokenize='porter unicode61')")
        docs = [
            "The quick brown foxes were running through the forests of Sichuan.",
            "大熊猫主要生活在四川的山区，English keywords like SQLite databases work here.",
            "毫不相关的一段中文文字。",
        ]
        db.executemany("INSERT INTO fts(rowid, body) VALUES (?, ?)", enumerate(map(prep, docs)))
        checks = {"runs": 0, "Forest": 0, "database": 1, "sqlite": 1, "熊猫": 1}
        return all(search(db, query(q))[:1] == [want] for q, want in checks.items())
    finally:
        db.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA, help="CMRC 2018 dev.json")
    args = parser.parse_args()

    passages, questions = load(args.data)
    chars = sum(map(len, passages))
    print(
        f"sqlite {sqlite3.sqlite_version}; {len(passages)} passages ({chars} chars), "
        f"{len(questions)} questions"
    )

    cache = Path(jieba.dt.tmp_dir or tempfile.gettempdir()) / (jieba.dt.cache_file or "jieba.cache")
    cached = cache.exists()
    started = time.perf_counter()
    jieba.initialize()
    print(f"jieba {jieba.__version__} dictionary load: {time.perf_counter() - started:.2f} s ", end="")
    print(
        f"({'from cache ' + str(cache) if cached else 'built from dict.txt, cache written to ' + str(cache)})"
    )

    candidates = [
        Candidate("a unicode61", "unicode61", {"body": str}, unicode61_query),
        Candidate("b trigram", "trigram", {"body": str}, trigram_query),
        Candidate("c cjk-uni", "porter unicode61", {"body": cjk_spaced}, cjk_bigram_query),
        Candidate("c0 cjk-uni-lit", "porter unicode61", {"body": cjk_spaced_between}, cjk_bigram_query),
        Candidate(
            "c-stop (ragproxy)",
            "porter unicode61 remove_diacritics 2",
            {"body": cjk_spaced},
            cjk_bigram_query_stop,
        ),
        Candidate("d jieba", "porter unicode61", {"body": jieba_spaced}, jieba_query),
        Candidate(
            "e cjk-uni+jieba",
            "porter unicode61",
            {"uni": cjk_spaced, "seg": jieba_spaced},
            combined_query,
        ),
    ]

    header = (
        f"{'candidate':<17}{'R@1':>7}{'R@5':>7}{'MRR@10':>8}{'ans@5':>7}{'build s':>9}{'size MB':>9}"
        f"{'p50 ms':>8}{'p95 ms':>8}{'empty':>7}"
    )
    print(header)
    for candidate in candidates:
        r = run(candidate, passages, questions)
        n = len(r.ranks)
        print(
            f"{r.name:<17}"
            f"{sum(k == 1 for k in r.ranks) / n:>7.3f}"
            f"{sum(k is not None and k <= 5 for k in r.ranks) / n:>7.3f}"
            f"{sum(1 / k for k in r.ranks if k is not None) / n:>8.3f}"
            f"{sum(r.answer_at5) / n:>7.3f}"
            f"{r.build_s:>9.2f}"
            f"{r.size_bytes / 1e6:>9.2f}"
            f"{statistics.median(r.latencies_ms):>8.2f}"
            f"{percentile(r.latencies_ms, 0.95):>8.2f}"
            f"{r.empty:>7}",
            flush=True,
        )

    print(
        f"English through c preprocessing searchable (porter unicode61): "
        f"{'yes' if english_check(cjk_spaced, cjk_bigram_query_stop) else 'NO'}"
    )
    print(
        f"English through d preprocessing searchable (porter unicode61): "
        f"{'yes' if english_check(jieba_spaced, jieba_query) else 'NO'}"
    )


if __name__ == "__main__":
    main()
