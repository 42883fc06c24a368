"""The live index under a real watchdog observer, on real files."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.index.service import IndexService
from proxy.index.watcher import FolderWatcher
from proxy.settings import Settings


def eventually(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


class Live:
    def __init__(self, tmp_path: Path, storm: int = 5000, verify_every: float = 0) -> None:
        self.root = tmp_path / "docs"
        self.root.mkdir(exist_ok=True)
        self.service = IndexService(Settings(db=str(tmp_path / "index.db")))
        self.service.add_folders([("docs", self.root)])
        self.service.worker.start()
        self.watcher = FolderWatcher(self.service.indexer, storm=storm, verify_every=verify_every)
        self.watcher.start()
        self.settle()

    def settle(self) -> None:
        time.sleep(0.05)
        assert self.watcher.idle.wait(30)

    def found(self, query: str) -> list[str]:
        return [hit.path for hit in self.service.store.search_keyword(query, 50)]

    def close(self) -> None:
        self.watcher.stop()
        self.service.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    running = Live(tmp_path)
    yield running
    running.close()


def test_periodic_verification_finds_an_edit_that_kept_size_and_mtime(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    note = root / "note.md"
    note.write_text("The ferry leaves from pier QUOKKA.\n")
    before = IndexService(Settings(db=str(tmp_path / "index.db")))
    before.indexer.scan(before.add_folders([("docs", root)])[0])
    before.close()
    stat = note.stat()
    note.write_text("The ferry leaves from pier WOMBAT.\n")  # same length
    os.utime(note, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    live = Live(tmp_path, verify_every=2)
    try:
        assert live.found("QUOKKA") == ["note.md"]  # the start-up reconciliation trusts size and mtime
        eventually(lambda: live.found("WOMBAT") == ["note.md"])
        assert live.found("QUOKKA") == []
    finally:
        live.close()


def test_create_modify_delete(live: Live) -> None:
    note = live.root / "note.md"
    note.write_text("The walrus sleeps on the ice.\n")
    eventually(lambda: live.found("walrus") == ["note.md"])
    note.write_text("The narwhal swims under the ice.\n")
    eventually(lambda: live.found("narwhal") == ["note.md"])
    assert live.found("walrus") == []
    note.unlink()
    eventually(lambda: live.found("narwhal") == [])
    assert live.service.store.status()["collections"][0]["documents"] == 0


def test_vectors_follow(live: Live) -> None:
    (live.root / "a.md").write_text("Penguins huddle together for warmth.\n")
    # found first, then nothing pending: the other order could see "nothing pending" before the
    # file was indexed, then find it by keyword before it was embedded
    eventually(lambda: live.found("Penguins") == ["a.md"] and live.service.store.pending_chunks(5) == [])
    vector = live.service.embedder.embed_query("penguins keeping warm")
    assert [h.path for h in live.service.store.search_vector(vector, 1)] == ["a.md"]


def test_rename_and_directory_move(live: Live) -> None:
    (live.root / "sub").mkdir()
    (live.root / "sub" / "one.md").write_text("Albatross glides for hours.\n")
    (live.root / "sub" / "two.md").write_text("Albatross nests on islands.\n")
    (live.root / "solo.md").write_text("The puffin dives.\n")
    eventually(lambda: len(live.found("Albatross")) == 2 and live.found("puffin") == ["solo.md"])
    (live.root / "solo.md").rename(live.root / "renamed.md")
    eventually(lambda: live.found("puffin") == ["renamed.md"])
    (live.root / "sub").rename(live.root / "birds")
    eventually(lambda: sorted(live.found("Albatross")) == ["birds/one.md", "birds/two.md"])
    live.settle()
    assert live.service.store.status()["collections"][0]["documents"] == 3


def test_file_names_that_are_not_utf8(live: Live) -> None:
    folder = os.fsencode(live.root)

    def write(name: bytes, text: str) -> None:
        with open(os.path.join(folder, name), "wb") as file:
            file.write(text.encode())

    write(b"\xb2\xe2\xca\xd4.txt", "The GBK-named note mentions ocelots.\n")  # 测试 in GBK
    write(b"caf\xe9.md", "The cp1252-named note mentions tapirs.\n")
    eventually(lambda: live.found("ocelots") == ["\\xb2\\xe2\\xca\\xd4.txt"])
    eventually(lambda: live.found("tapirs") == ["caf\\xe9.md"])
    write(b"caf\xe9.md", "The cp1252-named note now mentions llamas.\n")
    eventually(lambda: live.found("llamas") == ["caf\\xe9.md"] and live.found("tapirs") == [])
    os.rename(os.path.join(folder, b"caf\xe9.md"), os.path.join(folder, b"caf\xe8.md"))
    eventually(lambda: live.found("llamas") == ["caf\\xe8.md"])
    os.unlink(os.path.join(folder, b"\xb2\xe2\xca\xd4.txt"))
    eventually(lambda: live.found("ocelots") == [])
    live.settle()
    collection = live.service.store.status()["collections"][0]
    assert (collection["documents"], collection["skipped"]) == (1, [])


def test_atomic_save_and_editor_files(live: Live) -> None:
    target = live.root / "doc.md"
    target.write_text("Version one mentions lemmings.\n")
    eventually(lambda: live.found("lemmings") == ["doc.md"])
    for temp in (".doc.md.swp", "doc.md~", ".goutputstream-X1Y2", "doc.md.tmp"):
        (live.root / temp).write_text("Editor scratch mentions SCRATCHCANARY.\n")
    temp = live.root / ".goutputstream-ABC123"
    temp.write_text("Version two mentions marmots.\n")
    os.replace(temp, target)  # how gedit, VS Code and many others save
    eventually(lambda: live.found("marmots") == ["doc.md"] and live.found("lemmings") == [])
    live.settle()
    assert live.found("SCRATCHCANARY") == []
    assert [d["path"] for d in live.service.store.status()["collections"][0]["skipped"]] == []


def test_changes_while_stopped_are_reconciled(tmp_path: Path) -> None:
    first = Live(tmp_path)
    (first.root / "keep.md").write_text("Caribou migrate.\n")
    (first.root / "gone.md").write_text("Lynx hunts.\n")
    eventually(lambda: len(first.found("Caribou OR Lynx")) == 2)
    first.close()
    (first.root / "gone.md").unlink()
    (first.root / "new.md").write_text("Moose wade.\n")
    (first.root / "keep.md").write_text("Caribou and reindeer migrate.\n")
    second = Live(tmp_path)
    try:
        assert second.found("Lynx") == [] and second.found("Moose") == ["new.md"]
        assert second.found("reindeer") == ["keep.md"]
    finally:
        second.close()


def test_event_storm_degrades_to_rescan(tmp_path: Path) -> None:
    live = Live(tmp_path, storm=50)
    try:
        for i in range(400):
            (live.root / f"f{i}.txt").write_text(f"Storm file number {i} mentions STORMWORD.\n")
        # idle between two of the observer's deliveries is not the end: wait for every file
        eventually(lambda: live.service.store.status()["collections"][0]["documents"] == 400, 60)
        live.settle()
        assert len(live.found("STORMWORD")) == 50  # the search's limit
        assert live.watcher.storms >= 1
    finally:
        live.close()


def test_editing_gitignore_reconciles(live: Live) -> None:
    (live.root / "draft.md").write_text("Draft mentions QUOKKA.\n")
    eventually(lambda: live.found("QUOKKA") == ["draft.md"])
    (live.root / ".gitignore").write_text("draft.md\n")
    eventually(lambda: live.found("QUOKKA") == [])
    (live.root / ".gitignore").write_text("")
    eventually(lambda: live.found("QUOKKA") == ["draft.md"])
