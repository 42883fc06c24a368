"""The relevance gate, fusion by strength, keyword terms and follow-up queries, case by case
(the measured rates are in bench/relevance_eval.py and BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from proxy.index.service import Ranking, fuse
from proxy.index.store import Hit
from proxy.index.store.sqlite.matrix import VectorMatrix
from proxy.index.textsearch import query_terms
from proxy.index.vectors import Background
from proxy.pipeline.conversation import Query, search_queries
from proxy.pipeline.retrieval import Gate
from proxy.text import asked_in_cjk, prose, written_in_cjk

E5_GATE = Gate(fallback=(0.87, 0.90))
CHINESE = "大熊猫主要以竹子为食，每天要吃十二到三十八公斤竹子。"
ENGLISH = "The Zephyr-9 valve must be torqued to 47 newton-metres."


def hit(chunk_id: int, text: str, score: float = 1.0) -> Hit:
    cjk = written_in_cjk(text)  # as a store records it
    return Hit(
        chunk_id,
        score,
        text,
        "docs",
        f"{chunk_id}.md",
        0,
        len(text),
        None,
        None,
        chunk_id,
        0,
        str(chunk_id),
        cjk,
    )


def ranking(
    similarity: float, strength: float, background: Background | None, text: str = CHINESE, terms: int = 6
) -> Ranking:
    """A ranking for a question in the script of ``text``."""
    return Ranking([hit(1, text)], {1: similarity}, {1: strength}, background, terms, text == CHINESE)


def test_a_chinese_chunk_must_stand_out_from_the_chinese_background() -> None:
    """e5 scores any Chinese text ~0.86 against any Chinese prompt: 0.87 is noise there."""
    chinese = Background(mean=0.82, std=0.013, count=2000, same_script=True)
    assert not E5_GATE.passes(hit(1, CHINESE), ranking(0.87, 0.1, chinese))  # z 3.8 + 0.5
    assert E5_GATE.passes(hit(1, CHINESE), ranking(0.90, 0.0, chinese))  # z 6.2 on meaning alone
    # less far above it, with most of the question's words: evidence adds up
    assert E5_GATE.passes(hit(1, CHINESE), ranking(0.865, 0.6, chinese))  # z 3.5 + 3
    assert not E5_GATE.passes(hit(1, CHINESE), ranking(0.865, 0.3, chinese))  # z 3.5 + 1.5
    # but words alone never carry a chunk the meaning puts near the background
    assert not E5_GATE.passes(hit(1, CHINESE), ranking(0.845, 1.0, chinese))  # z 1.9 + 5


def test_the_same_cosine_means_more_in_english() -> None:
    english = Background(mean=0.74, std=0.02, count=2000, same_script=True)
    assert E5_GATE.passes(hit(1, ENGLISH), ranking(0.86, 0.0, english, ENGLISH))  # z 6


def test_a_query_of_one_or_two_terms_must_stand_out_further() -> None:
    """ "thanks!", "hi": nothing for the words to confirm, and short texts embed anywhere."""
    english = Background(mean=0.77, std=0.012, count=2000, same_script=True)
    few = ranking(0.84, 1.0, english, ENGLISH, terms=1)  # z 5.8, every word matched
    assert not E5_GATE.passes(hit(1, ENGLISH), few)
    assert E5_GATE.passes(hit(1, ENGLISH), ranking(0.85, 0.0, english, ENGLISH, terms=2))  # z 6.7


def test_without_a_background_in_the_query_script_the_embedder_thresholds_apply() -> None:
    """An English greeting against a Chinese collection's few English chunks, or a tiny
    collection: the background says nothing, the per-script cosine decides."""
    mixed = Background(mean=0.72, std=0.012, count=2000, same_script=False)
    assert not E5_GATE.passes(hit(1, ENGLISH), ranking(0.86, 0.0, mixed, ENGLISH))
    assert E5_GATE.passes(hit(1, ENGLISH), ranking(0.88, 0.0, mixed, ENGLISH))
    assert not E5_GATE.passes(hit(1, CHINESE), ranking(0.89, 0.0, None))
    assert Gate().passes(hit(1, CHINESE), ranking(0.5, 0.0, None))  # no calibration: no cut


def test_chunks_without_vectors_need_the_words_and_min_score_is_a_plain_cut() -> None:
    bare = Ranking([hit(1, ENGLISH)], {}, {1: 0.9}, None)
    assert E5_GATE.passes(hit(1, ENGLISH), bare)
    assert not E5_GATE.passes(hit(1, ENGLISH), Ranking([hit(1, ENGLISH)], {}, {1: 0.2}, None))
    assert Gate(cosine=0.5).passes(hit(1, CHINESE), ranking(0.6, 0.0, None))


def test_background_is_taken_in_the_query_script_when_there_is_enough() -> None:
    matrix = VectorMatrix(2)
    for i in range(60):  # Chinese chunks near the query, English ones far from it
        matrix.add(i, 1, np.array([1.0, 0.1], dtype=np.float32).tobytes(), cjk=True)
        matrix.add(100 + i, 1, np.array([0.1, 1.0], dtype=np.float32).tobytes(), cjk=False)
    _, chinese = matrix.scan([1.0, 0.1], 5, None, cjk=True)
    _, everything = matrix.scan([1.0, 0.1], 5, None)
    assert chinese is not None and everything is not None
    assert chinese.same_script and chinese.count == 60 and chinese.std < everything.std
    _, few = matrix.scan([1.0, 0.1], 5, [2], cjk=True)
    assert few is None


def test_a_question_is_asked_in_the_script_of_its_prose_not_of_what_it_pastes() -> None:
    # Chinese questions that name software, quote English or paste code or an error message:
    # their background is the Chinese chunks (by bytes most of them would count as Latin)
    chinese = [
        "TiDB 支持 Sequence 吗？",
        "128 乘以 17",
        "“Long time no see”是中式英语吗",
        "这段代码报错 NameError: name 'np' is not defined，怎么回事",
        "这段代码为什么一直输出 undefined？\n\nfunction getName() {\n  setTimeout(() => name, 100);\n}",
        "呢個 function 好長，點樣 refactor 先好？",
    ]
    english = [
        "what does 你好 mean",
        "How do I make a python virtual environment and activate it?",
        "brb",
        "Why does this print 3?\n```python\nprint(len('你好吗'))\n```",
    ]
    assert [asked_in_cjk(q) for q in chinese] == [True] * len(chinese)
    assert [asked_in_cjk(q) for q in english] == [False] * len(english)
    assert "setTimeout" not in prose(chinese[4]) and "undefined" in prose(chinese[4])


def test_a_weak_keyword_list_cannot_outvote_a_strong_vector_list() -> None:
    """A Chinese question over English text: the keyword list's best hit matched a stray
    number. Min-max scaling made it 1.0; by strength it counts for little."""
    keyword = [hit(7, "stray 2019", 3.0), hit(8, "other", 1.0)]
    vector = [hit(1, ENGLISH, 0.82), hit(7, "stray 2019", 0.70), hit(8, "other", 0.69)]
    assert fuse(keyword, vector)[0].chunk_id == 7  # min-max: the stray number wins
    assert fuse(keyword, vector, {7: 0.05, 8: 0.02})[0].chunk_id == 1
    assert fuse(keyword, vector, {7: 0.6, 8: 0.2})[0].chunk_id == 7  # a strong list counts in full


def test_one_letter_and_short_number_terms_are_left_out() -> None:
    assert query_terms("what is the turbine's blade count in 2019 for model 7") == [
        "turbine",
        "blade",
        "count",
        "2019",
        "model",
    ]
    assert query_terms("a 7") == ["7"]  # nothing else: kept


def test_follow_ups_search_the_conversation_not_a_length_rule() -> None:
    long_follow_up = "Could you summarise the key points of that in three short bullet points for me please?"
    messages = [
        {"role": "user", "content": "How is the Zephyr-9 valve maintained?"},
        {"role": "assistant", "content": "Torque it to 47 Nm."},
        {"role": "user", "content": long_follow_up},
    ]
    assert search_queries(messages) == [
        Query(long_follow_up, 1.0),
        Query(f"How is the Zephyr-9 valve maintained?\n{long_follow_up}", 0.95),
        Query("How is the Zephyr-9 valve maintained?", 0.85),
    ]
    assert search_queries(messages[:1]) == [Query("How is the Zephyr-9 valve maintained?", 1.0)]


class CountingEmbedder:
    """The real e5 embedder, counting the queries it embeds."""

    def __init__(self) -> None:
        from plugins.embedders.e5 import E5Embedder

        self.real = E5Embedder()
        self.name, self.dim, self.max_tokens = self.real.name, self.real.dim, self.real.max_tokens
        self.queries: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.real.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return self.real.embed_query(text)


def test_a_follow_up_embeds_the_previous_question_only_once(docs_index: tuple[Path, Path]) -> None:
    from proxy.index.service import IndexService
    from proxy.pipeline.retrieval import retrieve
    from proxy.settings import Settings
    from tests.ragdocs import CANARY, QUESTION

    embedder = CountingEmbedder()
    service = IndexService(Settings(db=str(docs_index[1])), embedder=embedder)  # type: ignore[arg-type]
    try:
        first = [{"role": "user", "content": QUESTION}]
        retrieve(service, search_queries(first), top_k=5, collections=None)
        follow_up = [
            *first,
            {"role": "assistant", "content": "It is QX."},
            {"role": "user", "content": "Why?"},
        ]
        found = retrieve(service, search_queries(follow_up), top_k=5, collections=None)
    finally:
        service.close()
    assert embedder.queries == [QUESTION, "Why?", f"{QUESTION}\nWhy?"]
    assert CANARY in found.passages[0].text


def test_where_a_collection_holds_both_scripts_each_chunk_is_ranked_in_its_own() -> None:
    # a Chinese question about an English paper: every Chinese chunk stands nearer to it by
    # cosine than any English one, but the paper stands far above the English background
    rng = np.random.default_rng(7)
    query = [1.0, 0.5, 0.0]

    def matrix(english: int) -> VectorMatrix:
        found = VectorMatrix(3)
        for i in range(60):
            found.add(i, 1, np.array([1.0, 0.1, rng.normal(0, 0.05)], dtype=np.float32).tobytes(), cjk=True)
        for i in range(english):
            vector = np.array([0.1, 1.0, rng.normal(0, 0.05)], dtype=np.float32)
            found.add(100 + i, 1, vector.tobytes(), cjk=False)
        found.add(999, 1, np.array([0.7, 1.0, 0.0], dtype=np.float32).tobytes(), cjk=False)  # the paper
        return found

    both = matrix(english=60)
    hits, background = both.scan(query, 5, None, cjk=True)
    assert background is not None and background.other is not None and background.other.count == 61
    assert hits[0][0] == 999
    cosines = dict(hits)
    assert all(cosines[999] < score for chunk, score in hits if chunk < 100)  # scores stay cosines
    assert background.of(False).z(cosines[999]) > background.of(True).z(max(s for c, s in hits if c < 100))

    few = matrix(english=10)  # too few English chunks for a background of their own: by cosine
    hits, background = few.scan(query, 5, None, cjk=True)
    assert background is not None and background.other is None
    assert 999 not in dict(hits)
