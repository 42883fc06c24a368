"""``ragproxy index``, ``search``, ``status`` and ``serve --docs`` as processes, the way users run them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.docs import installed_plugin, write_folder
from tests.servers import Server, free_port
from tests.test_serve import serve
from tests.test_watcher import eventually


def ragproxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=300)


def test_index_search_status(tmp_path: Path) -> None:
    root, db = tmp_path / "manuals", str(tmp_path / "index.db")
    write_folder(root)
    (root / "blob.txt").write_bytes(b"\x00binary")
    done = ragproxy("index", str(root), "--db", db)
    assert done.returncode == 0, done.stderr
    assert "manuals: 6 indexed, 0 unchanged, 1 skipped, 0 removed" in done.stderr
    again = ragproxy("index", str(root), "--db", db)
    assert "manuals: 0 indexed, 6 unchanged, 1 skipped" in again.stderr

    status = json.loads(ragproxy("status", "--json", "--db", db).stdout)
    (collection,) = status["collections"]
    assert (collection["name"], collection["documents"], collection["pending_vectors"]) == ("manuals", 6, 0)
    assert collection["skipped"] == [{"path": "blob.txt", "reason": "binary file"}]
    assert status["embedder"].startswith("multilingual-e5-small") and status["dim"] == 384
    assert "manuals: " in ragproxy("status", "--db", db).stdout

    hits = json.loads(ragproxy("search", "熊猫吃什么", "--json", "-k", "2", "--db", db).stdout)
    assert hits[0]["path"] == "panda.md" and hits[0]["collection"] == "manuals" and "竹子" in hits[0]["text"]
    text = ragproxy("search", "winch", "--db", db, "--mode", "keyword").stdout
    assert "manuals:manual.pdf p.2" in text
    assert ragproxy("search", "winch", "--db", db, "--collection", "other").stdout.strip() == "no results"


def small_folder(root: Path) -> Path:
    root.mkdir()
    (root / "otter.md").write_text("Sea otters hold hands while they sleep.\n")
    (root / "heron.md").write_text("A heron waits in the shallows for fish.\n")
    (root / "blob.txt").write_bytes(b"\x00binary")
    return root


def test_index_without_a_terminal_prints_plain_lines(tmp_path: Path) -> None:
    root = small_folder(tmp_path / "notes")
    done = ragproxy("index", str(root), "--db", str(tmp_path / "index.db"))
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "\r" not in done.stderr and done.stdout == ""
    lines = done.stderr.splitlines()
    assert json.loads(lines[0])["event"] == "index.skipped"  # the warning, a JSON log line
    assert lines[1:] == ["notes: 2 indexed, 0 unchanged, 1 skipped, 0 removed", "embedding: 2/2 chunks done"]


def test_index_json_prints_a_summary_per_folder(tmp_path: Path) -> None:
    root, db = small_folder(tmp_path / "notes"), str(tmp_path / "index.db")
    other = tmp_path / "more"
    other.mkdir()
    (other / "wren.md").write_text("The wren is small and loud.\n")
    done = ragproxy("index", str(root), str(other), "--json", "--db", db)
    assert done.returncode == 0, done.stderr
    summaries = [json.loads(line) for line in done.stdout.splitlines()]
    assert summaries == [
        {"collection": "notes", "indexed": 2, "unchanged": 0, "skipped": 1, "removed": 0, "embedded": 2},
        {"collection": "more", "indexed": 1, "unchanged": 0, "skipped": 0, "removed": 0, "embedded": 1},
    ]
    (skipped,) = [json.loads(line) for line in done.stderr.splitlines()]  # no progress, only logs
    assert (skipped["event"], skipped["path"]) == ("index.skipped", "blob.txt")

    (root / "heron.md").unlink()
    again = ragproxy("index", str(root), "--json", "--db", db)
    assert json.loads(again.stdout) == {
        "collection": "notes",
        "indexed": 0,
        "unchanged": 1,
        "skipped": 1,
        "removed": 1,
        "embedded": 0,
    }


def test_index_on_a_terminal_shows_bars_and_warnings_intact(tmp_path: Path) -> None:
    root = small_folder(tmp_path / "notes")
    controller, terminal = os.openpty()  # standard error is a terminal, as when a user runs it
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE")}
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "index", str(root), "--db", str(tmp_path / "index.db")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env={**env, "TERM": "xterm-256color", "COLUMNS": "120"},
    )
    os.close(terminal)
    received = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        received += chunk
    os.close(controller)
    assert process.wait(60) == 0
    shown = received.decode()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    assert re.search(r"notes .*0/3 files .*ETA", plain), plain  # the scan's bar, with its total
    assert re.search(r"embedding .*/2 chunks .*%", plain), plain
    # the warning: a whole line of its own, with no escape code or bar inside it
    warning = re.search(r"\x1b\[2K(\{[^\r\n\x1b]*\})\r\n", shown)
    assert warning is not None, shown
    logged = json.loads(warning.group(1))
    assert (logged["event"], logged["path"], logged["reason"]) == ("index.skipped", "blob.txt", "binary file")
    # each finished bar gives way to its summary line, which stays
    assert "\x1b[2Knotes: 2 indexed, 0 unchanged, 1 skipped, 0 removed\r\n" in shown
    assert "\x1b[2Kembedding: 2/2 chunks done\r\n" in shown


def test_serve_docs_indexes_and_watches(tmp_path: Path) -> None:
    root, db = tmp_path / "notes", str(tmp_path / "index.db")
    root.mkdir()
    (root / "before.md").write_text("Written before the server started: OKAPI.\n")

    def found(word: str) -> list[str]:
        result = ragproxy("search", word, "--json", "--mode", "keyword", "--db", db)
        return [h["path"] for h in json.loads(result.stdout)] if result.returncode == 0 else []

    with serve("--docs", f"notes={root}", "--db", db, env={}):
        eventually(lambda: found("OKAPI") == ["before.md"], 60)
        (root / "after.md").write_text("Written while serving: TAPIR.\n")
        eventually(lambda: found("TAPIR") == ["after.md"], 60)


def test_serve_refuses_a_missing_docs_folder(tmp_path: Path) -> None:
    result = ragproxy("serve", "--docs", str(tmp_path / "nowhere"), "--db", str(tmp_path / "i.db"))
    assert result.returncode == 2 and "not a directory" in result.stderr


def test_verify_finds_an_edit_that_kept_size_and_mtime(tmp_path: Path) -> None:
    root, db = tmp_path / "notes", str(tmp_path / "index.db")
    root.mkdir()
    note = root / "note.md"
    note.write_text("The ferry leaves from pier QUOKKA.\n")
    (root / "other.md").write_text("Nothing changes here.\n")
    assert ragproxy("index", str(root), "--db", db).returncode == 0
    before = note.stat()
    note.write_text("The ferry leaves from pier WOMBAT.\n")  # same length, different text
    os.utime(note, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert note.stat().st_size == before.st_size and note.stat().st_mtime_ns == before.st_mtime_ns

    def found(word: str) -> list[str]:
        result = ragproxy("search", word, "--json", "--mode", "keyword", "--db", db)
        return [h["path"] for h in json.loads(result.stdout)]

    plain = ragproxy("index", str(root), "--db", db)
    assert "notes: 0 indexed, 2 unchanged" in plain.stderr
    assert (found("QUOKKA"), found("WOMBAT")) == (["note.md"], [])

    verified = ragproxy("index", "--verify", str(root), "--db", db)
    assert verified.returncode == 0, verified.stderr
    assert "notes: 1 indexed, 1 unchanged, 0 skipped, 0 removed; 2 verified, 1 changed" in verified.stderr
    assert (found("QUOKKA"), found("WOMBAT")) == ([], ["note.md"])
    again = ragproxy("index", "--verify", str(root), "--db", db)
    assert "; 2 verified, 0 changed" in again.stderr


def test_status_and_search_never_create_an_index(tmp_path: Path) -> None:
    db = tmp_path / "data" / "index.db"
    for args in (["status"], ["search", "anything"], ["status", "--json"]):
        result = ragproxy(*args, "--db", str(db))
        assert result.returncode == 2, result.stderr
        assert f"no index at {db}" in result.stderr and "ragproxy index" in result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_status_and_search_on_a_corrupt_index(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    db.write_bytes(b"garbage, not SQLite " * 500)
    for args in (["status"], ["search", "anything"]):
        result = ragproxy(*args, "--db", str(db))
        assert result.returncode == 2
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
        assert f"the index at {db} cannot be read (file is not a database)" in result.stderr
        assert "ragproxy index" in result.stderr


def test_serve_with_an_embedder_that_does_not_load_says_why(ollama: Server, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    result = ragproxy(
        *("serve", "--port", str(free_port()), "--upstream", ollama.url, "--docs", str(tmp_path / "notes")),
        *("--db", str(tmp_path / "i.db"), "--embedder", "ollama", "--embed-model", "nosuch-embed"),
    )
    assert result.returncode != 0
    logged = result.stdout + result.stderr  # the server's one log stream
    assert "ragproxy: error: the ollama embedder's model 'nosuch-embed'" in logged
    assert "'ollama pull nosuch-embed'" in logged and "Traceback" not in logged


def write_named(folder: Path, name: bytes, text: str) -> None:
    """A file whose name is these bytes (not UTF-8, as unpacked from a Windows zip)."""
    with open(os.path.join(os.fsencode(folder), name), "wb") as file:
        file.write(text.encode())


def keyword_paths(word: str, db: str) -> list[str]:
    result = ragproxy("search", word, "--json", "--mode", "keyword", "--db", db)
    return [h["path"] for h in json.loads(result.stdout)] if result.returncode == 0 else []


def test_index_with_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    root, db = tmp_path / "unzipped", str(tmp_path / "index.db")
    root.mkdir()
    write_named(root, b"\xb2\xe2\xca\xd4.txt", "The GBK-named note mentions ocelots.\n")
    write_named(root, b"caf\xe9.md", "The cp1252-named note mentions tapirs.\n")
    done = ragproxy("index", str(root), "--db", db)
    assert done.returncode == 0, done.stderr
    assert "unzipped: 2 indexed, 0 unchanged, 0 skipped, 0 removed" in done.stderr
    assert keyword_paths("ocelots", db) == ["\\xb2\\xe2\\xca\\xd4.txt"]
    assert "unzipped:caf\\xe9.md" in ragproxy("search", "tapirs", "--mode", "keyword", "--db", db).stdout

    os.unlink(os.path.join(os.fsencode(root), b"caf\xe9.md"))
    write_named(root, b"na\xefve.md", "The naive note mentions quolls.\n")
    again = ragproxy("index", str(root), "--db", db)
    assert "unzipped: 1 indexed, 1 unchanged, 0 skipped, 1 removed" in again.stderr, again.stderr
    assert (keyword_paths("tapirs", db), keyword_paths("quolls", db)) == ([], ["na\\xefve.md"])


def test_serve_catches_up_with_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    root, db = tmp_path / "unzipped", str(tmp_path / "index.db")
    root.mkdir()
    write_named(root, b"caf\xe9.md", "The cp1252-named note mentions tapirs.\n")
    with serve("--docs", f"notes={root}", "--db", db, env={}):
        eventually(lambda: keyword_paths("tapirs", db) == ["caf\\xe9.md"], 60)
    os.unlink(os.path.join(os.fsencode(root), b"caf\xe9.md"))  # while the server is down
    write_named(root, b"\xb2\xe2\xca\xd4.txt", "The GBK-named note mentions ocelots.\n")
    with serve("--docs", f"notes={root}", "--db", db, env={}):
        eventually(lambda: keyword_paths("ocelots", db) == ["\\xb2\\xe2\\xca\\xd4.txt"], 60)
        assert keyword_paths("tapirs", db) == []


GARBAGE_LOADER = """
from proxy.hookspecs import hookimpl
from proxy.types import Document


def load_odd(path):
    return Document([path.read_text()])  # not text: nothing catches it before the chunker


@hookimpl
def register_loaders(register):
    register(".odd", load_odd, isolated=False)
"""


def test_a_file_that_fails_unexpectedly_is_skipped_and_the_scan_goes_on(tmp_path: Path) -> None:
    env = installed_plugin(tmp_path / "site", "odd_loader", GARBAGE_LOADER)
    root, db = tmp_path / "notes", str(tmp_path / "index.db")
    root.mkdir()
    (root / "a.odd").write_text("Whatever the loader makes of it.\n")
    (root / "b.md").write_text("The good file mentions zeppelins.\n")
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "index", str(root), "--db", db],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "notes: 1 indexed, 0 unchanged, 1 skipped, 0 removed" in done.stderr
    (collection,) = json.loads(ragproxy("status", "--json", "--db", db).stdout)["collections"]
    (skipped,) = collection["skipped"]
    assert skipped["path"] == "a.odd" and skipped["reason"].startswith("failed: TypeError: ")
    assert keyword_paths("zeppelins", db) == ["b.md"]
