"""The PostgreSQL store on a real PostgreSQL server with pgvector: the same keyword scores as the
SQLite file, replicas' statistics kept current through NOTIFY, one indexer per collection, and
two ``ragproxy serve`` replicas on one index, the indexing one killed mid-run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from proxy.errors import ConfigError
from proxy.index.service import IndexService
from proxy.index.store import SqliteStore, open_store, pack
from proxy.index.store.postgres import PostgresStore, masked
from proxy.index.vectors import unit
from proxy.settings import Settings
from proxy.types import Chunk
from tests.docs import write_folder
from tests.servers import ragproxy_process


def eventually(check: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Seconds until ``check()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true after {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


@pytest.fixture
def both(pg_url: str, tmp_path: Path) -> Iterator[tuple[IndexService, IndexService]]:
    """The same folder indexed into a SQLite file and into PostgreSQL."""
    root = tmp_path / "docs"
    write_folder(root)
    (root / "mixed.md").write_text(
        "# Turbines\n\nWind turbines' blades turn; the turbine's gearbox runs hot in summer.\n\n"
        "## 风力发电\n\n风力发电机的叶片在夏天转得更快，齿轮箱会发热。大熊猫不住在这里。\n"
    )
    services = []
    for db in (str(tmp_path / "index.db"), pg_url):
        service = IndexService(Settings(db=db))
        collection = service.indexer.add_collection("docs", root)
        assert service.store.claim_collection(collection.id)
        service.indexer.scan(collection)
        service.worker.embed_pending()
        services.append(service)
    yield services[0], services[1]
    for service in services:
        service.close()


QUERIES = [
    "Fresnel lens",
    "foghorn storms",
    "turbine gearbox summer",
    "wind turbines blades",
    "熊猫吃什么",
    "风力发电机的叶片",
    "齿轮箱",
    "where are the spare batteries",
    "compost heap",
    "the keeper",
]


def test_keyword_scores_match_sqlite(both: tuple[IndexService, IndexService]) -> None:
    sqlite, postgres = both
    for query in QUERIES:
        expected = [(h.path, h.text, round(h.score, 4)) for h in sqlite.store.search_keyword(query, 10)]
        found = [(h.path, h.text, round(h.score, 4)) for h in postgres.store.search_keyword(query, 10)]
        assert found == expected, query
        assert postgres.store.keyword_idf(query) == pytest.approx(sqlite.store.keyword_idf(query)), query


def test_hybrid_ranking_and_gate_evidence_match_sqlite(both: tuple[IndexService, IndexService]) -> None:
    sqlite, postgres = both
    for query in QUERIES:
        a, b = sqlite.rank(query, 5), postgres.rank(query, 5)
        assert [h.text for h in b.hits] == [h.text for h in a.hits], query
        assert a.background is not None and b.background is not None
        assert (b.background.mean, b.background.std, b.background.count) == pytest.approx(
            (a.background.mean, a.background.std, a.background.count), abs=1e-4
        )
        for chunk in a.similarity.keys() & b.similarity.keys():
            assert b.similarity[chunk] == pytest.approx(a.similarity[chunk], abs=1e-4)


def test_misspelt_words_are_mended_alike(both: tuple[IndexService, IndexService]) -> None:
    sqlite, postgres = both
    for query in ("the turbiness gearbox", "wind turbnies in summer", "Which country has turbines?"):
        assert postgres.store.spelled(query) == sqlite.store.spelled(query), query
    assert postgres.store.spelled("wind turbnies in summer") == "wind turbines in summer"


def text_chunk(text: str) -> Chunk:
    return Chunk(ordinal=0, text=text, start=0, end=len(text))


def test_replicas_statistics_follow_the_vector_log(pg_url: str) -> None:
    writer, replica = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        writer.bind_embedder("test", 4)
        collection = writer.collection_id("c", "/c")
        vectors = {"a.md": [1.0, 0.0, 0.0, 0.0], "b.md": [0.0, 1.0, 0.0, 0.0], "c.md": [0.6, 0.8, 0.0, 0.0]}
        q = unit([1.0, 0.0, 0.0, 0.0])

        def count() -> int | None:
            seen = replica._stats.background(q, None, None)
            return seen.count if seen is not None else None

        assert count() is None  # read once (empty), then followed
        for path, vector in vectors.items():
            writer.replace_document(
                collection, path, digest=path, size=1, mtime=1, loader="t", chunks=[text_chunk(path)]
            )
            for pending in writer.pending_chunks(10):
                writer.store_vectors("test", [(pending, pack(vector))])
        eventually(lambda: count() == 3, 1.0)
        writer.delete_documents(collection, ["b.md"])
        eventually(lambda: count() == 2, 1.0)
        fresh = PostgresStore(pg_url)  # a replica that reads everything now agrees with the followed sums
        try:
            followed, loaded = (
                replica._stats.background(q, None, None),
                fresh._stats.background(q, None, None),
            )
            assert followed is not None and loaded is not None
            assert (followed.mean, followed.std) == pytest.approx((loaded.mean, loaded.std), abs=1e-6)
            assert followed.mean == pytest.approx((1.0 + 0.6) / 2, abs=1e-4)
        finally:
            fresh.close()
        assert [h.path for h in replica.search_vector([0.0, 0.9, 0.1, 0.0], 1)] == ["c.md"]
    finally:
        writer.close()
        replica.close()


def test_one_indexer_per_collection_and_takeover(pg_url: str) -> None:
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        collection = first.collection_id("c", "/c")
        assert first.claim_collection(collection) and first.claim_collection(collection)
        assert not second.claim_collection(collection)
        first.replace_document(
            collection, "a.md", digest="a", size=1, mtime=1, loader="t", chunks=[text_chunk("x")]
        )
        assert second.pending_chunks(10) == []  # the holder embeds it
        assert [p.content_hash for p in first.pending_chunks(10)] != []
        first.close()  # its session ends: PostgreSQL frees the lock as the backend exits
        eventually(lambda: second.claim_collection(collection), 2)
        assert len(second.pending_chunks(10)) == 1
    finally:
        second.close()


def test_settings_and_errors(pg_url: str, tmp_path: Path) -> None:
    assert Settings(db=pg_url).db_url == pg_url
    with pytest.raises(ConfigError, match="postgresql:// URL; got a mysql:// URL"):
        Settings(db="mysql://u:secret@h/db")
    with pytest.raises(ConfigError, match="holds no ragproxy index"):
        open_store(pg_url, readonly=True)
    assert masked("postgresql://me:secret@db.example/rag") == "postgresql://me:***@db.example/rag"
    with pytest.raises(ConfigError, match="cannot connect") as caught:
        open_store("postgresql://me:secret@127.0.0.1:9/rag")
    assert "secret" not in str(caught.value)
    assert isinstance(open_store(tmp_path / "x.db"), SqliteStore)


def search(url: str, query: str) -> list[str]:
    reply = httpx.post(url + "/v1/rag/search", json={"query": query, "k": 5, "mode": "keyword"}, timeout=10)
    assert reply.status_code == 200, reply.text
    return [hit["file"] for hit in reply.json()["data"]]


def test_two_replicas_share_the_index_and_one_takes_over(pg_url: str, tmp_path: Path) -> None:
    docs = tmp_path / "handbook"
    docs.mkdir()
    (docs / "boiler.md").write_text("# Boiler\n\nThe boiler room key hangs by the north door.\n")
    flags = (
        "--db",
        pg_url,
        "--docs",
        str(docs),
        "--upstream",
        "http://127.0.0.1:9",
        "--log-level",
        "warning",
    )
    with ragproxy_process(*flags) as first, ragproxy_process(*flags) as second:
        replicas = (first.url, second.url)
        for url in replicas:
            eventually(lambda url=url: search(url, "boiler key") == ["boiler.md"], 30)
        # a file saved now is found through both replicas within a second
        (docs / "zeppelin.md").write_text("The zeppelin hangar opens at dawn.\n")
        saved = time.monotonic()
        for url in replicas:
            eventually(lambda url=url: search(url, "zeppelin hangar") == ["zeppelin.md"], 5)
        took = time.monotonic() - saved
        print(f"saved to searchable through both replicas: {took:.3f} s")
        assert took <= 1.0
        # the replica that indexes dies; what changes meanwhile is taken up by the other
        indexer = first if _holds(first.url) else second
        survivor = second if indexer is first else first
        assert _holds(indexer.url) and not _holds(survivor.url)
        indexer.process.kill()
        indexer.process.wait()
        (docs / "kayak.md").write_text("Kayaks are stored under the pier.\n")
        (docs / "boiler.md").unlink()
        took = eventually(lambda: search(survivor.url, "kayaks pier") == ["kayak.md"], 10)
        print(f"killed to taken over, the new file found: {took:.3f} s")
        assert search(survivor.url, "boiler key") == []
        assert took <= 10 and _holds(survivor.url)


def _holds(url: str) -> bool:
    """True if the replica at ``url`` indexes the collection (as its metrics say)."""
    reply = httpx.get(url + "/metrics", timeout=10)
    reply.raise_for_status()
    return 'ragproxy_index_indexed_here{collection="handbook"} 1.0' in reply.text


def test_the_index_command_refuses_a_collection_a_server_indexes(pg_url: str, tmp_path: Path) -> None:
    docs = tmp_path / "d"
    docs.mkdir()
    (docs / "a.md").write_text("text\n")
    holder = PostgresStore(pg_url)
    try:
        collection = holder.collection_id("d", os.path.realpath(docs))
        assert holder.claim_collection(collection)
        run = subprocess.run(
            [sys.executable, "-m", "proxy", "index", str(docs), "--db", pg_url, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 2 and "is being indexed by a ragproxy serving it" in run.stderr
    finally:
        holder.close()


def test_doctor_checks_a_postgresql_index(pg_url: str) -> None:
    from proxy.doctor import check_database, check_disk

    missing = check_database(Settings(db=pg_url))
    assert missing.status == "FAIL" and "holds no ragproxy index" in missing.detail
    PostgresStore(pg_url).close()  # creates the tables
    found = check_database(Settings(db=pg_url))
    assert found.status == "OK" and "0 collections" in found.detail
    assert check_disk(Settings(db=pg_url)).status == "OK"


def test_collections_scope_every_search(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        store.bind_embedder("test", 4)
        ids = {name: store.collection_id(name, f"/{name}") for name in ("a", "b")}
        for name, collection in ids.items():
            text = f"The lighthouse keeper of {name} logs storms. 灯塔看守人"
            store.replace_document(
                collection, "log.md", digest=name, size=1, mtime=1, loader="t", chunks=[text_chunk(text)]
            )
        for pending in store.pending_chunks(10):
            store.store_vectors("test", [(pending, pack([1.0, 0.1 * pending.collection_id, 0.0, 0.0]))])
        for search in (
            lambda c: store.search_keyword("lighthouse keeper", 10, c),
            lambda c: store.search_keyword("灯塔看守", 10, c),
            lambda c: store.search_vector([1.0, 0.0, 0.0, 0.0], 10, c),
        ):
            assert sorted(h.collection for h in search(None)) == ["a", "b"]
            assert [h.collection for h in search(["b"])] == ["b"]
            assert search(["nope"]) == []
        first = store.search_keyword("storms", 1, ["a"])[0]
        assert store.chunk(first.chunk_id, ["a"]) is not None and store.chunk(first.chunk_id, ["b"]) is None
        hits, background = store.scan_vectors([1.0, 0.0, 0.0, 0.0], 10, ["a"])
        assert [h.collection for h in hits] == ["a"] and background is not None and background.count == 1
    finally:
        store.close()


def test_both_engines_rank_each_script_against_its_own_background(pg_url: str, tmp_path: Path) -> None:
    """A Chinese question over Chinese notes and English papers: the paper it asks about ranks
    first in both engines, by how far it stands above the English background."""
    rng = np.random.default_rng(11)
    rows = [(f"灯塔看守人的日志第{i}页", [1.0, 0.1, float(rng.normal(0, 0.05))]) for i in range(60)]
    rows += [(f"Storm log {i} of the keeper", [0.1, 1.0, float(rng.normal(0, 0.05))]) for i in range(60)]
    rows.append(("The Fresnel lens paper", [0.7, 1.0, 0.0]))
    found = []
    for store in (SqliteStore(tmp_path / "index.db"), PostgresStore(pg_url)):
        try:
            store.bind_embedder("test", 3)
            collection = store.collection_id("notes", "/notes")
            for i, (text, _) in enumerate(rows):
                chunks = [text_chunk(text)]
                store.replace_document(
                    collection, f"{i}.md", digest=str(i), size=1, mtime=1, loader="t", chunks=chunks
                )
            vectors = {text: vector for text, vector in rows}
            for pending in store.pending_chunks(500):
                store.store_vectors("test", [(pending, pack(vectors[pending.text]))])
            hits, background = store.scan_vectors([1.0, 0.5, 0.0], 5, None, cjk=True)
            assert background is not None and background.other is not None
            found.append([hit.text for hit in hits])
        finally:
            store.close()
    for texts in found:  # the Chinese chunks after it tie (one vector, rounded alike): any order
        assert texts[0] == "The Fresnel lens paper" and len(texts) == 5, texts
