"""The ``ollama`` embedder plugin against the Ollama-behaving server (real llama.cpp vectors)."""

from __future__ import annotations

import time

import pytest

from plugins.embedders.ollama import OllamaEmbedder, prefixes_for
from proxy.errors import ConfigError
from tests.conftest import UpstreamLog
from tests.servers import Server, free_port


def test_task_prefixes_per_model() -> None:
    assert prefixes_for("nomic-embed-text:latest") == ("search_document: ", "search_query: ")
    assert prefixes_for("jeffh/intfloat-multilingual-e5-large:f16")[0] == "passage: "
    assert prefixes_for("bge-m3") == ("", "")


def test_batches_and_dimension(ollama: Server, upstream_log: UpstreamLog) -> None:
    embedder = OllamaEmbedder(ollama.url, "smollm2:135m", batch=2)
    assert embedder.dim == 576 and embedder.name == "ollama:smollm2:135m"
    vectors = embedder.embed_documents(["one", "two", "three"])
    assert len(vectors) == 3 and all(len(v) == 576 for v in vectors)
    query = embedder.embed_query("one")
    assert max(abs(a - b) for a, b in zip(query, vectors[0], strict=True)) < 1e-4  # no prefix for smollm2
    embedder.close()
    bodies = [r["body"] for r in upstream_log.requests("/api/embed")]
    assert [b["input"] for b in bodies] == [["dimension probe"], ["one", "two"], ["three"], ["one"]]


def test_an_upstream_that_is_not_up_is_one_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"does not answer .*start Ollama"):
        OllamaEmbedder(f"http://127.0.0.1:{free_port()}", "nomic-embed-text", startup_waits=(0.1, 0.2))
    assert 0.3 <= time.monotonic() - started < 10  # tried again after each wait, then gave up


def test_a_missing_model_says_to_pull_it(ollama: Server) -> None:
    with pytest.raises(ConfigError, match="'ollama pull nosuch-embed'"):
        OllamaEmbedder(ollama.url, "nosuch-embed", startup_waits=(0.1,))
