"""The status and search page at /ui/, over HTTP against a real ragproxy."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from tests.conftest import CHAT_MODEL, sdk
from tests.ragdocs import DOCS, QUESTION
from tests.servers import Server, ragproxy

HOSTILE = "<img src=x onerror=alert(1)>"


def test_root_stays_ollama_and_ui_redirects(rag_proxy: str) -> None:
    assert httpx.get(rag_proxy + "/").text == "Ollama is running"
    reply = httpx.get(rag_proxy + "/ui")
    assert reply.status_code in (301, 302, 307, 308) and reply.headers["location"] == "/ui/"


def test_page_shows_collections_upstream_and_counts(rag_proxy: str) -> None:
    reply = httpx.get(rag_proxy + "/ui/", timeout=30)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert "script-src" not in reply.headers["content-security-policy"]  # no script may run
    page = reply.text
    assert "<b>manuals</b>" in page
    assert f"<td class=num>{len(DOCS)}</td>" in page  # documents
    assert "ollama API" in page and "answers" in page
    assert CHAT_MODEL in page


def test_search_shows_what_a_question_retrieves(rag_proxy: str) -> None:
    reply = httpx.get(rag_proxy + "/ui/", params={"q": QUESTION}, timeout=60)
    assert reply.status_code == 200
    page = reply.text
    assert "manuals:valves/zephyr.md" in page
    assert "Maintenance" in page  # the heading
    assert 'class="ok">sent' in page
    assert 'id="search-summary"' in page
    assert 'value="What is the maintenance code of the Zephyr-9 valve?"' in page


def test_a_chat_appears_among_recent_requests(rag_proxy: str) -> None:
    sdk(rag_proxy).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=8
    )
    page = httpx.get(rag_proxy + "/ui/", timeout=30).text
    recent = page.split("<h2>Recent requests</h2>", 1)[1]
    assert "<code>/v1/chat/completions</code>" in recent
    assert "manuals:valves/zephyr.md" in recent  # the passage it sent
    assert "found" in recent and "sent" in recent
    assert QUESTION not in recent  # the question only with --log-content


def test_query_is_escaped(rag_proxy: str) -> None:
    page = httpx.get(rag_proxy + "/ui/", params={"q": HOSTILE + '"><b>'}, timeout=60).text
    assert HOSTILE not in page and '"><b>' not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_keys_and_escaped_file_names(
    ollama: Server, make_proxy: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / f"{HOSTILE}.md").write_text("# Hostile\n\nA file whose name is markup.\n", encoding="utf-8")
    (folder / f"{HOSTILE}.bin").write_bytes(b"\x00\x01")  # skipped, its name and reason listed
    with make_proxy(
        upstream=ollama.url,
        upstream_api="ollama",
        model=CHAT_MODEL,
        docs=(f"notes={folder}",),
        db=str(tmp_path / "index.db"),
        api_keys=("sekrit", "narrow@other"),
    ) as url:
        missing = httpx.get(url + "/ui/")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Basic")  # the browser asks
        assert httpx.get(url + "/ui/", auth=("", "wrong")).status_code == 401
        assert httpx.get(url + "/ui/", headers={"Authorization": "Bearer sekrit"}).status_code == 200
        assert httpx.get(url + "/v1/models", auth=("", "sekrit")).status_code == 401  # Basic: the page only
        deadline = time.monotonic() + 30
        while True:
            page = httpx.get(url + "/ui/", auth=("me", "sekrit"), timeout=30).text
            if "&lt;img" in page or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
        assert HOSTILE not in page
        assert "<h2>Recent requests</h2>" in page
        narrow = httpx.get(url + "/ui/", auth=("", "narrow"), timeout=30).text
        assert "<b>notes</b>" not in narrow  # a collection the key may not read
        assert "<h2>Recent requests</h2>" not in narrow  # nor other people's requests


def test_control_and_bidi_characters_in_names_are_shown_escaped(tmp_path: Path) -> None:
    """U+202E turns 'invoice<RLO>fdp.exe' into 'invoiceexe.pdf' on screen; an ESC in a file
    name would drive the terminal that runs ``ragproxy status``."""
    folder = tmp_path / "notes\u202etxt"
    folder.mkdir()
    (folder / "invoice\u202efdp.exe.md").write_text("# Invoice\n\nThe otter owes \u202ethree fish.\n")
    (folder / "clear\x1b[2J.bin").write_bytes(b"\x00\x01")  # skipped: its name and reason listed
    db = str(tmp_path / "index.db")
    command = [sys.executable, "-m", "proxy"]
    indexed = subprocess.run([*command, "index", str(folder), "--db", db], capture_output=True, timeout=300)
    assert indexed.returncode == 0, indexed.stderr
    status = subprocess.run([*command, "status", "--db", db], capture_output=True, text=True, timeout=60)
    assert "notes\\u202etxt: " in status.stdout and "skipped clear\\x1b[2J.bin" in status.stdout
    assert "\x1b" not in status.stdout and "\u202e" not in status.stdout, status.stdout
    with ragproxy(db=db, upstream="http://127.0.0.1:9") as url:
        page = httpx.get(url + "/ui/", params={"q": "How many fish does the otter owe?"}, timeout=60).text
    assert "<b>notes\\u202etxt</b>" in page and "clear\\x1b[2J.bin" in page
    assert "invoice\\u202efdp.exe.md" in page  # the passage found
    assert "\x1b" not in page and "\u202e" not in page
