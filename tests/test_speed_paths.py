"""The parts that keep retrieval fast on a large index: the two-pass vector search and the
choice of keyword terms. Real SQLite, real numpy; the exact answers are computed beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from proxy.index.store import SqliteStore
from proxy.index.store.sqlite.keywords import Vocabulary
from proxy.index.store.sqlite.matrix import FIRST_PASS_FROM, VectorMatrix
from proxy.types import Chunk


def clustered(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """Unit vectors around 300 centres sharing a common component, as text embeddings do."""
    common = rng.standard_normal(dim)
    centres = rng.standard_normal((300, dim)) + 3 * common
    vectors = centres[rng.integers(0, 300, rows)] + 0.6 * rng.standard_normal((rows, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_two_pass_search_finds_what_exact_search_finds() -> None:
    rng = np.random.default_rng(11)
    dim, rows = 64, FIRST_PASS_FROM + 4000
    vectors = clustered(rng, rows, dim)
    collections = rng.integers(1, 4, rows)
    scripts = rng.random(rows) < 0.3
    matrix = VectorMatrix(dim)
    for start in range(0, rows - 100, 1000):  # in steps, crossing the first-pass threshold
        end = min(start + 1000, rows - 100)
        ids = list(range(start + 1, end + 1))
        matrix.add_many(ids, collections[start:end].tolist(), vectors[start:end], scripts[start:end].tolist())
    for i in range(rows - 100, rows):  # one at a time, as a saved file's chunks are
        matrix.add(i + 1, int(collections[i]), vectors[i].tobytes(), bool(scripts[i]))
    removed = set(range(1, rows + 1, 9))
    matrix.remove(removed)
    alive = np.array([i + 1 not in removed for i in range(rows)])
    hits10 = hits_in_one = 0
    queries = clustered(rng, 40, dim)
    for q in queries:
        exact = np.where(alive, vectors @ q, -np.inf)
        expected = [int(i) + 1 for i in np.argsort(-exact)[:10]]
        found = matrix.search(q.tolist(), 10, None)
        assert not removed & {chunk_id for chunk_id, _ in found}
        for chunk_id, score in found:
            assert abs(score - float(vectors[chunk_id - 1] @ q)) < 5e-5
        hits10 += len(set(expected) & {chunk_id for chunk_id, _ in found})
        in_two = np.where(collections == 2, exact, -np.inf)
        expected_two = [int(i) + 1 for i in np.argsort(-in_two)[:10]]
        found_two, background = matrix.scan(q.tolist(), 10, [2], cjk=True)
        assert all(collections[chunk_id - 1] == 2 for chunk_id, _ in found_two)
        hits_in_one += len(set(expected_two) & {chunk_id for chunk_id, _ in found_two})
        # the background: over the query's script within the collection, as numpy computes it
        same = alive & (collections == 2) & scripts
        assert background is not None and background.same_script and background.count == int(same.sum())
        assert abs(background.mean - float(exact[same].mean())) < 1e-4
        assert abs(background.std - float(exact[same].std())) < 1e-4
    # a first pass that picked its candidates at random would find ~17% (4,096 of 24,000 rows);
    # neighbours here are nearly tied within their cluster, harder than real text (bench/speed.py)
    assert hits10 / (10 * len(queries)) >= 0.9
    assert hits_in_one / (10 * len(queries)) >= 0.9


def test_a_small_matrix_scores_every_row() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((500, 8)).astype(np.float32)  # no structure at all
    matrix = VectorMatrix(8)
    matrix.add_many(list(range(1, 501)), [1] * 500, vectors, [False] * 500)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for q in rng.standard_normal((20, 8)).astype(np.float32):
        exact = unit @ (q / np.linalg.norm(q))
        found = matrix.search(q.tolist(), 10, None)
        assert {chunk_id for chunk_id, _ in found} == {int(i) + 1 for i in np.argsort(-exact)[:10]}
        assert all(abs(score - exact[chunk_id - 1]) < 5e-5 for chunk_id, score in found)
        assert [score for _, score in found] == sorted((score for _, score in found), reverse=True)


def write(store: SqliteStore, collection: int, path: str, text: str) -> None:
    """A one-chunk document."""
    store.replace_document(
        collection, path, digest=path, size=1, mtime=1, loader="t", chunks=[Chunk(0, text, 0, 9)]
    )


def keyword_store(tmp_path: Path) -> tuple[SqliteStore, int]:
    store = SqliteStore(tmp_path / "k.db")
    collection = store.collection_id("c", str(tmp_path))
    for n in range(120):  # a word in every chunk
        write(
            store, collection, f"p{n}.md", f"the turbine manual, page {n}: check the turbine before each run"
        )
    return store, collection


def test_common_words_are_left_out_of_the_keyword_search_past_the_budget(tmp_path: Path) -> None:
    store, collection = keyword_store(tmp_path)
    write(store, collection, "rare.md", "Zeppelins moored at the aurora mast; no turbine here")
    db = store.reader()
    question = "which turbine zeppelins moored at the aurora mast"
    everything = Vocabulary(budget=10**9).select(db, question)
    assert list(everything) == ["turbine", "zeppelins", "moored", "aurora", "mast"]
    assert everything["turbine"] == 121 and everything["zeppelins"] == 1  # by stem: "zeppelin"
    assert list(Vocabulary(budget=50).select(db, question)) == ["zeppelins", "moored", "aurora", "mast"]
    # the rarest two are kept whatever they cost
    assert list(Vocabulary(budget=0).select(db, "turbine manual zeppelins")) == ["manual", "zeppelins"]
    assert [h.path for h in store.search_keyword(question, 3)][:1] == ["rare.md"]
    store.close()


def test_a_word_saved_after_the_frequencies_were_read_is_found(tmp_path: Path) -> None:
    store, collection = keyword_store(tmp_path)
    assert [h.path for h in store.search_keyword("turbine manual", 1)]  # reads the frequencies
    write(store, collection, "new.md", "the turbine gasket of the kestrel line")
    assert [h.path for h in store.search_keyword("turbine kestrel gasket", 1)] == ["new.md"]
    store.close()


def test_frequencies_read_from_an_empty_index_follow_it_as_it_fills(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "k.db")
    store.warm()  # as serve does at start, before its first scan
    collection = store.collection_id("c", str(tmp_path))
    for n in range(40):
        panda = " 熊猫" if n % 4 == 0 else ""
        write(store, collection, f"p{n}.md", f"turbine gasket marker{n} of the kestrel line{panda}")
    weights = store.keyword_idf("turbine kestrel 熊猫")  # counts newer than the frequencies
    assert set(weights) == {"turbine", "kestrel", "熊 猫"} and all(w > 0 for w in weights.values())
    assert [h.path for h in store.search_keyword("gasket marker17", 1)] == ["p17.md"]
    store.close()
