"""Files made to hurt: a decompression bomb, a loader that never returns, text and chunks past the
limits. Each is skipped with its reason, the server's own memory stays where it was, and the
files after it are indexed. The files are made on the fly."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from plugins.embedders.e5 import E5Embedder
from proxy.index.chunker import excerpt
from proxy.index.service import QUERY_TOKENS, IndexService
from proxy.settings import Settings
from proxy.text import chunk_tokens
from tests.conftest import CHAT_MODEL
from tests.docs import installed_plugin, skipped, write_docx, write_docx_bomb, write_pdf


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_decompression_bomb_is_skipped_without_touching_the_server_memory(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    write_docx_bomb(docs / "bomb.docx", 80 * 1024 * 1024)
    assert (docs / "bomb.docx").stat().st_size < 2 * 1024 * 1024
    write_docx(docs / "garden.docx")
    (docs / "note.md").write_text("The heron waits in the reeds.\n", encoding="utf-8")
    service = IndexService(Settings(db=str(tmp_path / "index.db"), reader_memory=256))
    before = peak_rss_mb()
    try:
        (collection,) = service.add_folders([("docs", docs)])
        report = service.indexer.scan(collection)
        assert (report.indexed, report.skipped) == (2, 1)
        reason = skipped(service)["bomb.docx"]
        # turned away by the zip directory's sizes, before anything inflates (a bomb that slipped
        # past would meet the reader's memory limit: test_a_plugin_loader_that_hangs_or_hoards...)
        assert "word/document.xml inflates" in reason and "decompression bomb" in reason, reason
        assert [h.path for h in service.store.search_keyword("tomatoes", 5)] == ["garden.docx"]
    finally:
        service.close()
    assert peak_rss_mb() - before < 150  # parsed in this process, it would take gigabytes


def test_text_and_chunks_past_the_limits_are_skipped_with_the_reason(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    write_pdf(docs / "long.pdf", ["Page of a very long report. " * 4] * 40)
    (docs / "long.txt").write_text("A line of a very long log.\n" * 2000, encoding="utf-8")
    (docs / "short.txt").write_text("The swift never lands.\n", encoding="utf-8")
    service = IndexService(Settings(db=str(tmp_path / "index.db"), max_file_text=4000, max_file_chunks=4))
    try:
        (collection,) = service.add_folders([("docs", docs)])
        service.indexer.scan(collection)
        reasons = skipped(service)
        assert "over the 4000-character limit" in reasons["long.pdf"]  # read in the reader process
        assert "over the 4000-character limit" in reasons["long.txt"]  # read in this one
        assert [h.path for h in service.store.search_keyword("swift", 5)] == ["short.txt"]
    finally:
        service.close()
    service = IndexService(Settings(db=str(tmp_path / "chunks.db"), max_file_chunks=4))
    try:
        (collection,) = service.add_folders([("docs", docs)])
        service.indexer.scan(collection)
        assert "chunks, over the 4-chunk limit" in skipped(service)["long.txt"]
    finally:
        service.close()


PLUGIN = """
import time

from proxy.hookspecs import hookimpl
from proxy.types import Document


def load_slow(path):
    time.sleep(3600)
    return Document("never")


def load_greedy(path):
    hoard = [bytearray(64 * 1024 * 1024) for _ in range(64)]
    return Document(str(len(hoard)))


@hookimpl
def register_loaders(register):
    register(".slow", load_slow)
    register(".greedy", load_greedy)
"""


def test_a_plugin_loader_that_hangs_or_hoards_is_stopped_and_the_next_file_read(tmp_path: Path) -> None:
    env = installed_plugin(tmp_path / "site", "hostile_loader", PLUGIN)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.slow").write_text("x")
    (docs / "b.greedy").write_text("x")
    write_docx(docs / "garden.docx")
    db = str(tmp_path / "i.db")
    run = [sys.executable, "-m", "proxy"]
    index = subprocess.run(
        [*run, "index", str(docs), "--db", db, "--reader-timeout", "2", "--reader-memory", "256"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert index.returncode == 0, index.stderr
    assert "1 indexed" in index.stderr and "2 skipped" in index.stderr
    status = json.loads(
        subprocess.run(
            [*run, "status", "--json", "--db", db], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    reasons = {entry["path"]: entry["reason"] for entry in status["collections"][0]["skipped"]}
    assert "took over 2 s" in reasons["a.slow"]
    assert "256 MB memory limit" in reasons["b.greedy"]


def test_a_huge_message_is_searched_by_its_two_ends(rag_proxy: str) -> None:
    """100,000 characters of pasted text with the question at the end: the search reads about
    what the embedder can (its time grows with the square of the length), from both ends; the
    message, far over the 2,048-token window, is then refused with the reason (Ollama would cut
    it without a word)."""
    pasted = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 1800
    question = pasted + "\n\nWhat does the Zephyr-9 valve need to be torqued to?"
    assert len(question) > 100_000
    excerpt_ = excerpt(question, QUERY_TOKENS, ends=True)
    assert chunk_tokens(excerpt_) <= QUERY_TOKENS + 2 and excerpt_.endswith("torqued to?")
    reply = httpx.post(
        rag_proxy + "/v1/rag/preview",
        json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": question}]},
        timeout=120,
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "context_length_exceeded" and "2048-token window" in error["message"]


def test_questions_go_before_bulk_embedding() -> None:
    embedder = E5Embedder(threads=1)
    texts = [f"Paragraph {i} of a long manual about lighthouse maintenance and logs." * 8 for i in range(48)]
    done = threading.Event()
    bulk = threading.Thread(target=lambda: (embedder.embed_documents(texts), done.set()))
    bulk.start()
    try:
        time.sleep(0.5)
        embedder.embed_query("when is the lamp cleaned?")
        assert not done.is_set(), "the question waited for the whole bulk embedding"
    finally:
        bulk.join()
    # the model never reads past 512 tokens: a huge text costs what its first 512 tokens do
    assert chunk_tokens(embedder._fit("word " * 100_000)) <= embedder.max_tokens
