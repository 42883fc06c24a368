"""How a scan prepares and writes documents: keyword texts, batches, FTS5 segments."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.index.store import SqliteStore, new_document
from proxy.index.store.sqlite import connect
from proxy.index.textsearch import CJK_CLASS, fold, index_texts
from proxy.types import Chunk

TEXTS = [
    "",
    "plain English, nothing to space",
    "大熊猫吃竹子。TiDB 是一个分布式数据库",
    "々〆〇 ひらがな カタカナ 𠀀𪜀 and é, Ω",
    "a\x00大熊",  # a NUL survives
    "🐼 熊猫\n\n## 标题 > heading",
    "遠端主機的視窗顯示在本地，後來 乾隆 𥪕",  # Traditional: kept as Simplified (遠 → 远)
]


def spaced_by_regex(text: str) -> str:
    """The reference: a space between CJK characters and around each run of them, Traditional
    characters folded to Simplified ones."""
    return re.sub(f"[{CJK_CLASS}]+", lambda run: " " + " ".join(fold(run.group())) + " ", text)


def fts_tokens(texts: list[str]) -> list[list[str]]:
    """The tokens FTS5 (the index's tokenizer) makes of each text, in order."""
    db = connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    db.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", enumerate(texts, 1))
    tokens: list[list[str]] = [[] for _ in texts]
    for doc, term, offset in db.execute("SELECT doc, term, offset FROM v ORDER BY doc, offset"):
        tokens[doc - 1].append(f"{offset}:{term}")
    db.close()
    return tokens


def test_keyword_texts_of_a_document_are_tokenised_like_each_text_alone() -> None:
    assert index_texts([]) == []
    assert index_texts(TEXTS[:2]) == TEXTS[:2]  # ASCII comes back as it is
    spaced = index_texts(TEXTS)
    assert len(spaced) == len(TEXTS)
    assert [s.split() for s in spaced] == [spaced_by_regex(t).split() for t in TEXTS]
    assert fts_tokens(spaced) == fts_tokens([spaced_by_regex(t) for t in TEXTS])
    assert "0:大" in fts_tokens([spaced[2]])[0]
    assert spaced[-1].split()[:6] == ["远", "端", "主", "机", "的", "视"]


def chunks(*texts: str) -> list[Chunk]:
    return [Chunk(i, text, 0, len(text)) for i, text in enumerate(texts)]


def segments(store: SqliteStore) -> int:
    row = store.reader().execute("SELECT COUNT(DISTINCT segid) FROM chunks_fts_idx").fetchone()
    return int(row[0])


def test_a_batch_is_one_transaction_and_one_fts_segment(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "index.db")
    collection = store.collection_id("docs", str(tmp_path))
    documents = [
        new_document(
            f"{i}.md", f"d{i}", 1, 1.0, "t", chunks(f"lighthouse keeper {'abcdefghijkl'[i] * 4}", f"熊猫 {i}")
        )
        for i in range(12)
    ]
    ids = store.replace_documents(collection, documents)
    assert len(set(ids)) == 12
    # Written document by document, each file's FTS5 rows became a segment of their own.
    assert segments(store) == 1
    assert len(store.search_keyword("lighthouse", 20)) == 12
    assert [h.path for h in store.search_keyword("hhhh", 20)] == ["7.md"]

    # Again, changed: old chunks and their keyword rows go, the same ids stay.
    changed = [new_document(d.path, "x", 1, 1.0, "t", chunks(f"foghorn {d.path}")) for d in documents]
    assert store.replace_documents(collection, changed) == ids
    assert store.search_keyword("lighthouse", 20) == []
    assert len(store.search_keyword("foghorn", 20)) == 12
    db = store.reader()
    assert db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 12
    store.close()


def test_a_path_given_twice_in_a_batch_keeps_the_last(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "index.db")
    collection = store.collection_id("docs", str(tmp_path))
    first = new_document("a.md", "1", 1, 1.0, "t", chunks("first version"))
    second = new_document("a.md", "2", 1, 1.0, "t", chunks("second version", "more"))
    other = new_document("b.md", "3", 1, 1.0, "t", chunks("other"))
    ids = store.replace_documents(collection, [first, other, second])
    assert ids[0] == ids[2] != ids[1]
    assert [h.text for h in store.document_chunks("docs", "a.md") or []] == ["second version", "more"]
    assert store.search_keyword("first", 5) == []
    assert store.document_state(collection, "a.md").content_hash == "2"  # type: ignore[union-attr]
    store.close()
