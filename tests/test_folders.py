"""Folders as collections: same-name folders, nested folders, files that are not files, and the
index's read connections, on real folders, a real SQLite file and a real server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.index.service import IndexService
from proxy.index.store import SqliteStore
from proxy.index.watcher import FolderWatcher
from proxy.settings import Settings
from tests.conftest import CHAT_MODEL
from tests.servers import Server, ragproxy
from tests.test_watcher import eventually

KEY = "sk-outer-only-0123456789"


def notes(root: Path, *files: tuple[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files:
        (root / name).write_text(text, encoding="utf-8")
    return root


def documents(db: Path) -> dict[str, list[str]]:
    """Each collection's documents, by name."""
    store = SqliteStore(db)
    try:
        ids = store.collections()
        return {name: sorted(store.document_states(ids[name])) for name in ids}
    finally:
        store.close()


def test_same_name_folders_become_two_collections_whatever_the_order(tmp_path: Path) -> None:
    a = notes(tmp_path / "a" / "notes", ("otter.md", "The otter floats on its back.\n"))
    b = notes(tmp_path / "b" / "notes", ("heron.md", "The heron stands in the reeds.\n"))
    db = tmp_path / "index.db"
    for order in ([a, b], [b, a]):  # a restart in the other order keeps both, under the same names
        service = IndexService(Settings(db=str(db)))
        try:
            for collection in service.add_folders([("", folder) for folder in order]):
                service.indexer.scan(collection)
        finally:
            service.close()
        assert documents(db) == {"notes": ["otter.md"], "b-notes": ["heron.md"]}


def ragproxy_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=300)


def test_a_name_held_by_another_folder_is_refused_and_moves_only_when_asked(tmp_path: Path) -> None:
    a = notes(tmp_path / "a", ("otter.md", "The otter floats on its back.\n"))
    b = notes(tmp_path / "b", ("heron.md", "The heron stands in the reeds.\n"))
    db = str(tmp_path / "index.db")
    assert ragproxy_cli("index", str(a), "--collection", "x", "--db", db).returncode == 0
    refused = ragproxy_cli("index", str(b), "--collection", "x", "--db", db)
    assert refused.returncode == 2
    assert "'x' is the folder" in refused.stderr and "--move" in refused.stderr
    assert documents(Path(db)) == {"x": ["otter.md"]}  # nothing removed
    # two folders into one collection: refused before anything is read
    assert ragproxy_cli("index", str(a), str(b), "--collection", "y", "--db", db).returncode == 2
    assert "y" not in documents(Path(db))
    # serving: the clash is told before the server starts
    serve = ragproxy_cli("serve", "--docs", f"x={b}", "--port", "1", "--db", db)
    assert serve.returncode == 2 and "'x' is the folder" in serve.stderr
    serve = ragproxy_cli("serve", "--docs", f"z={a}", "--docs", f"z={b}", "--port", "1", "--db", db)
    assert serve.returncode == 2 and "two folders are named 'z'" in serve.stderr
    # asked for: the collection moves, and its documents follow the folder
    assert ragproxy_cli("index", str(b), "--collection", "x", "--move", "--db", db).returncode == 0
    assert documents(Path(db)) == {"x": ["heron.md"]}


@pytest.fixture
def nested(ollama: Server, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    outer = notes(tmp_path / "n", ("public.md", "The lighthouse keeper logs the weather.\n"))
    inner = notes(outer / "private", ("canary.md", "The vault code is quartz-falcon-77.\n"))
    with ragproxy(
        upstream=ollama.url,
        upstream_api="ollama",
        model=CHAT_MODEL,
        db=str(tmp_path / "index.db"),
        docs=(f"outer={outer}", f"inner={inner}"),
        api_keys=(f"{KEY}@outer",),
    ) as url:
        yield url, inner


def search(url: str, query: str) -> list[str]:
    reply = httpx.post(
        url + "/v1/rag/search",
        json={"query": query, "k": 10, "mode": "keyword"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert reply.status_code == 200, reply.text
    return [f"{hit['collection']}:{hit['file']}" for hit in reply.json()["data"]]


def test_a_folder_inside_another_is_its_own_collection(nested: tuple[str, Path], tmp_path: Path) -> None:
    url, inner = nested
    db = tmp_path / "index.db"
    eventually(lambda: documents(db) == {"outer": ["public.md"], "inner": ["canary.md"]}, 30)
    assert search(url, "lighthouse keeper") == ["outer:public.md"]
    assert search(url, "vault code quartz falcon") == []  # the outer key never reads the inner folder
    # the inner folder's changes reach its own collection, and nothing of it the outer one
    (inner / "canary.md").write_text("The vault code is basalt-heron-12.\n", encoding="utf-8")
    (inner / "second.md").write_text("A second private note.\n", encoding="utf-8")
    eventually(lambda: documents(db) == {"outer": ["public.md"], "inner": ["canary.md", "second.md"]}, 30)
    store = SqliteStore(db)
    try:
        eventually(lambda: [h.path for h in store.search_keyword("basalt heron", 5)] == ["canary.md"], 30)
        assert store.search_keyword("quartz falcon", 5) == []
        (inner / "canary.md").unlink()
        eventually(lambda: store.search_keyword("basalt heron", 5) == [], 30)
    finally:
        store.close()
    assert documents(db) == {"outer": ["public.md"], "inner": ["second.md"]}


def test_an_outer_collection_gives_up_what_a_new_inner_one_takes(tmp_path: Path) -> None:
    outer = notes(tmp_path / "n", ("public.md", "Public note.\n"))
    notes(outer / "private", ("canary.md", "Private note.\n"))
    db = tmp_path / "index.db"
    service = IndexService(Settings(db=str(db)))
    try:
        (collection,) = service.add_folders([("outer", outer)])
        service.indexer.scan(collection)
        assert documents(db) == {"outer": ["private/canary.md", "public.md"]}
        for collection in service.add_folders([("inner", outer / "private")]):
            service.indexer.scan(collection)
        service.indexer.scan(service.indexer.collections["outer"])
    finally:
        service.close()
    assert documents(db) == {"outer": ["public.md"], "inner": ["canary.md"]}


def test_fifos_sockets_and_devices_are_never_opened(tmp_path: Path) -> None:
    """A FIFO named .gitignore (or like a note) would block the indexer forever on open."""
    root = notes(tmp_path / "docs", ("note.md", "The kestrel hovers over the field.\n"))
    os.mkfifo(root / ".gitignore")
    os.mkfifo(root / "pipe.md")
    (root / "sub").mkdir()
    os.mkfifo(root / "sub" / ".gitignore")
    os.symlink("/dev/zero", root / "zero.txt")
    service = IndexService(Settings(db=str(tmp_path / "index.db")))
    done = threading.Event()
    try:
        (collection,) = service.add_folders([("docs", root)])
        worker = threading.Thread(target=lambda: (service.indexer.scan(collection), done.set()), daemon=True)
        worker.start()
        assert done.wait(60), "the scan hung on a file that is not a regular file"
        watcher = FolderWatcher(service.indexer)
        watcher.start()
        try:
            (root / "sub" / "later.md").write_text("The swift never lands.\n", encoding="utf-8")
            eventually(lambda: [h.path for h in service.store.search_keyword("swift", 5)] == ["sub/later.md"])
        finally:
            watcher.stop()
        assert [h.path for h in service.store.search_keyword("kestrel", 5)] == ["note.md"]
    finally:
        service.close()


def open_files(path: Path) -> int:
    """This process's file descriptors on the index (the database, its WAL and shared memory)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(path))
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_read_connections_end_with_their_threads(tmp_path: Path) -> None:
    """Servers read from short-lived worker threads; each one's connection must go with it."""
    db = tmp_path / "index.db"
    store = SqliteStore(db)
    try:
        store.reader().execute("SELECT count(*) FROM chunks").fetchone()
        baseline = open_files(db)
        threads_per_burst = 20
        for _ in range(6):  # bursts of searches, each from threads that then end
            threads = [
                threading.Thread(target=lambda: store.search_keyword("anything at all", 5))
                for _ in range(threads_per_burst)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        # SQLite keeps a closed connection's descriptors for reuse while other connections of
        # the process hold locks on the file, as many as closed at once: fewer than one burst's
        # connections (two descriptors each), where kept connections would hold six bursts'
        eventually(lambda: open_files(db) < baseline + 2 * threads_per_burst, 5)
    finally:
        store.close()
    assert open_files(db) == 0
