"""End-to-end check, run by hand through open_webui.sh: a real Open WebUI with its default chat
settings, driven in headless Chromium, gets context from ragproxy and shows the sources.

Everything runs on loopback: llama-server with the tiny test model, the Ollama-behaving test
server in front of it, ragproxy (in this process) over tests/ragdocs.py's documents, and
``open-webui serve``, started twice: with ragproxy as its OpenAI connection, then as its Ollama
connection. Each run asks tests/ragdocs.py's QUESTION in the browser and checks:

(i)   the canary reached ragproxy's upstream in the prompt;
(ii)  OpenAI connection: Open WebUI's source chips, whose text holds the canary;
      Ollama connection: the reply ends with the "Sources:" footnote naming valves/zephyr.md;
(iii) whether the reply states the fact (reported only: a 135M model may not).

Exits 1 if (i) or (ii) fails in any run. Screenshots and logs go to tests/e2e/output/.

With ``--capture-tools FILE``, instead: Open WebUI talks to the Ollama-behaving server directly
(no ragproxy between them), QUESTION is asked once, and the ``tools`` array Open WebUI attached to
that chat is written to FILE, with its version, for the tests that replay it
(tests/data/open-webui-tools.json).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from playwright.sync_api import Locator, Page, sync_playwright  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from proxy.logging import configure_logging  # noqa: E402
from tests.ragdocs import CANARY, QUESTION, build_docs_index  # noqa: E402
from tests.servers import HERE, fake_ollama, free_port, llama_server, ragproxy, stop, wait_ready  # noqa: E402

MODEL = "smollm2:135m"
SOURCE_FILE = "valves/zephyr.md"
OUTPUT = Path(__file__).parent / "output"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragproxy-e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Two shared cores: Open WebUI takes about a minute to start, and the reply (plus Open WebUI's
# own title, tag and follow-up requests queued on the same two llama slots) a while longer.
START_TIMEOUT = 600.0
REPLY_TIMEOUT = 600.0


@dataclass
class RunResult:
    connection: str
    canary_upstream: bool = False
    sources_shown: bool = False
    sources_detail: str = ""
    fact_in_reply: bool = False
    reply: str = ""
    seconds: float = 0.0
    screenshot: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.canary_upstream and self.sources_shown


def open_webui_env(connection: str, proxy: str, data_dir: Path) -> dict[str, str]:
    """Open WebUI's environment: ragproxy as its only connection, nothing fetched from outside
    (no hub downloads, no update check, no telemetry), chat settings left at their defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OLLAMA_", "RAG_"))}
    env.update(
        DATA_DIR=str(data_dir),
        WEBUI_AUTH="False",
        # Given here so `open-webui serve` writes no key file into its working directory.
        WEBUI_SECRET_KEY=secrets.token_hex(24),
        OFFLINE_MODE="true",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        ENABLE_VERSION_UPDATE_CHECK="false",
        ANONYMIZED_TELEMETRY="false",
        DO_NOT_TRACK="true",
        SCARF_NO_ANALYTICS="true",
        # The default engine ("") loads a sentence-transformers model at start-up, which would
        # need a hub download; no document is uploaded here, so this engine is never called.
        RAG_EMBEDDING_ENGINE="ollama",
        RAG_OLLAMA_BASE_URL=proxy,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if connection == "openai":
        env.update(
            ENABLE_OPENAI_API="true",
            OPENAI_API_BASE_URL=f"{proxy}/v1",
            OPENAI_API_KEY="unused",
            ENABLE_OLLAMA_API="false",
        )
    else:
        env.update(ENABLE_OLLAMA_API="true", OLLAMA_BASE_URL=proxy, ENABLE_OPENAI_API="false")
    return env


@contextmanager
def open_webui(command: str, env: dict[str, str], workdir: Path, log: Path) -> Iterator[str]:
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [command, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}/health", process, timeout=START_TIMEOUT)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(process, timeout=30)


def upstream_prompts(ollama_url: str) -> list[str]:
    """The message texts of every chat request the Ollama-behaving server received."""
    texts: list[str] = []
    for record in httpx.get(ollama_url + "/_test/requests", timeout=10).json():
        body = record.get("body")
        if isinstance(body, dict):
            texts.extend(str(m.get("content") or "") for m in body.get("messages") or [])
    return texts


def dismiss_changelog(page: Page) -> None:
    """A first visit shows the changelog ("What's New") over the chat a moment after the page
    loads: close it if it comes."""
    button = page.get_by_role("button", name="Okay, Let's Go!")
    try:
        button.wait_for(timeout=15_000)
    except PlaywrightTimeout:
        return
    button.click()
    button.wait_for(state="hidden")


def pick_model(page: Page) -> None:
    page.locator('button[id^="model-selector-"][id$="-button"]').first.click()
    page.locator("#model-search-input").fill(MODEL)
    page.locator(f'[role="option"][data-value="{MODEL}"]').first.click()
    page.wait_for_timeout(500)


def ask(page: Page) -> None:
    box = page.locator("#chat-input")
    box.click()
    box.type(QUESTION)
    page.locator("#send-message-button").click()


def last_reply(page: Page) -> Locator:
    """The last assistant message: its container holds the text, the source chips and the
    action buttons (which sit outside the ``.chat-assistant`` element itself)."""
    return page.locator('[id^="message-"]').filter(has=page.locator(".chat-assistant")).last


def wait_reply_done(page: Page) -> str:
    """The reply text once Open WebUI marks it done (its Regenerate button appears only then)."""
    reply = last_reply(page)
    reply.get_by_role("button", name="Regenerate").first.wait_for(timeout=REPLY_TIMEOUT * 1000)
    # The rendered Markdown only: the container also holds the "1 Source" button.
    texts = reply.locator("#response-content-container .markdown-prose").all_inner_texts()
    return "\n".join(texts) if texts else reply.locator("#response-content-container").inner_text()


def read_chips(page: Page, connection: str) -> tuple[bool, str]:
    """Open the source list under the reply and each chip's modal: (a chip's text holds the
    canary, what was seen)."""
    reply = last_reply(page)
    toggle = reply.locator('button[aria-label^="Toggle"][aria-label*="source"]')
    if not toggle.count():
        return False, "no source chips under the reply"
    label = toggle.first.inner_text().strip()
    toggle.first.click()
    chips = reply.locator('button[aria-label^="View source"]')
    chips.first.wait_for(timeout=10_000)
    seen = []
    found = False
    for i in range(chips.count()):
        name = chips.nth(i).inner_text().strip().replace("\n", " ")
        chips.nth(i).click()
        modal = page.locator('[role="dialog"]').last
        modal.wait_for(timeout=10_000)
        text = modal.inner_text()
        found = found or CANARY in text
        seen.append(f"{name!r} ({'canary' if CANARY in text else 'no canary'} in modal)")
        page.screenshot(path=str(OUTPUT / f"{connection}-source-{i + 1}.png"))
        page.keyboard.press("Escape")
        modal.wait_for(state="hidden", timeout=10_000)
    return found, f"{label}: " + ", ".join(seen)


def stored_sources(page: Page, base: str) -> list[str]:
    """The source names Open WebUI saved with the reply (its own API, with the page's token),
    as a cross-check of what the chips show."""
    token = page.evaluate("() => localStorage.token")
    chat_id = page.url.rstrip("/").rpartition("/c/")[2] if "/c/" in page.url else ""
    if not token or not chat_id:
        return []
    headers = {"Authorization": f"Bearer {token}"}
    history = httpx.get(f"{base}/api/v1/chats/{chat_id}", headers=headers, timeout=10).json()["chat"][
        "history"
    ]
    message = history["messages"].get(history.get("currentId"), {})
    return [str((s.get("source") or {}).get("name")) for s in message.get("sources") or []]


def proxy_records(log: Path, offset: int) -> list[dict[str, Any]]:
    """ragproxy's log records, from ``offset`` on, of the chats it retrieved for."""
    records = []
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            record = json.loads(line)
            if record.get("event") == "request" and record.get("rag"):
                records.append(record)
    return records


def chat(page: Page, base: str, result: RunResult) -> None:
    """Ask QUESTION as a person would: open Open WebUI, pick the model, type, send, and wait
    for the whole reply."""
    page.goto(base + "/", wait_until="domcontentloaded")
    page.locator("#chat-input").wait_for(timeout=180_000)
    dismiss_changelog(page)
    pick_model(page)
    asked = time.monotonic()
    ask(page)
    try:
        result.reply = wait_reply_done(page)
    finally:
        result.seconds = time.monotonic() - asked


def check(page: Page, base: str, ollama_url: str, result: RunResult) -> None:
    result.canary_upstream = any(CANARY in text for text in upstream_prompts(ollama_url))
    result.fact_in_reply = CANARY in result.reply
    if result.connection == "openai":
        result.sources_shown, result.sources_detail = read_chips(page, result.connection)
        result.notes.append(f"sources Open WebUI stored with the reply: {stored_sources(page, base)}")
        if "Sources:" in result.reply:
            result.notes.append("unexpected: a 'Sources:' footnote in the reply text as well")
    else:
        footnote = result.reply.rpartition("Sources:")[2] if "Sources:" in result.reply else ""
        result.sources_shown = SOURCE_FILE in footnote
        shown = f"footnote: {footnote.strip()!r}"
        result.sources_detail = shown if footnote else "no 'Sources:' footnote in the reply"


def run(connection: str, command: str, proxy: str, ollama_url: str, work: Path, proxy_log: Path) -> RunResult:
    result = RunResult(connection, screenshot=OUTPUT / f"{connection}.png")
    data_dir = work / f"open-webui-{connection}"
    data_dir.mkdir()
    httpx.delete(ollama_url + "/_test/requests", timeout=10)
    log_offset = proxy_log.stat().st_size
    started = time.monotonic()
    env = open_webui_env(connection, proxy, data_dir)
    with open_webui(command, env, data_dir, OUTPUT / f"open-webui-{connection}.log") as base:
        result.notes.append(f"Open WebUI up in {time.monotonic() - started:.0f} s")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            try:
                chat(page, base, result)
                check(page, base, ollama_url, result)
            finally:
                page.screenshot(path=str(result.screenshot), full_page=True)
                browser.close()
    for record in proxy_records(proxy_log, log_offset):
        facts = ("stream", "rag_found", "rag_sources", "tools_dropped", "num_ctx", "prompt_tokens")
        result.notes.append("ragproxy retrieved for: " + ", ".join(f"{k}={record.get(k)}" for k in facts))
    return result


def proxy_sse_evidence(proxy: str) -> str:
    """What ragproxy streams to an aiohttp User-Agent (as Open WebUI's) for QUESTION: the
    ``event`` fields, for the report when no chip appeared."""
    question = [{"role": "user", "content": QUESTION}]
    body = {"model": MODEL, "stream": True, "max_tokens": 8, "messages": question}
    events = []
    with httpx.stream(
        "POST",
        proxy + "/v1/chat/completions",
        json=body,
        headers={"User-Agent": "Python/3.11 aiohttp/3.13.2"},
        timeout=300,
    ) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if "event" in chunk:
                    events.append(chunk["event"])
    return json.dumps(events, ensure_ascii=False)[:2000]


def capture_tools(command: str, ollama_url: str, work: Path, target: Path) -> int:
    """Ask once through a real Open WebUI connected straight to the Ollama-behaving server, and
    keep the tool definitions it sent with the chat."""
    data_dir = work / "open-webui-capture"
    data_dir.mkdir()
    httpx.delete(ollama_url + "/_test/requests", timeout=10)
    env = open_webui_env("ollama", ollama_url, data_dir)
    result = RunResult("capture")
    with open_webui(command, env, data_dir, OUTPUT / "open-webui-capture.log") as base:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            try:
                chat(page, base, result)
            finally:
                page.screenshot(path=str(OUTPUT / "capture.png"), full_page=True)
                browser.close()
    asked = [
        r["body"]
        for r in httpx.get(ollama_url + "/_test/requests", timeout=10).json()
        if r.get("path") == "/api/chat"
        and isinstance(r.get("body"), dict)
        and any(QUESTION in str(m.get("content")) for m in r["body"].get("messages") or [])
    ]
    tools = next((body["tools"] for body in asked if body.get("tools")), None)
    if not tools:
        print(f"Open WebUI sent no tools with the chat ({len(asked)} chat requests seen)")
        return 1
    version = subprocess.run(
        [
            str(Path(command).with_name("python")),
            "-c",
            "import importlib.metadata as m; print(m.version('open-webui'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target.write_text(
        json.dumps({"client": f"open-webui {version}", "tools": tools}, indent=1, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    print(f"{len(tools)} tool definitions from Open WebUI {version} written to {target}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--open-webui", default=str(CACHE / "venv" / "bin" / "open-webui"))
    parser.add_argument("--only", choices=["openai", "ollama"], help="one connection instead of both")
    parser.add_argument("--capture-tools", type=Path, help="write the tools Open WebUI sends to this file")
    args = parser.parse_args()
    # A plain SIGTERM would skip the clean-ups and leave llama-server and Open WebUI running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUTPUT.mkdir(exist_ok=True)
    connections = [args.only] if args.only else ["openai", "ollama"]
    results: list[RunResult] = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ragproxy-e2e-")))
        # ragproxy runs in this process: its JSON log goes to a file beside the screenshots.
        proxy_log = OUTPUT / "open-webui-ragproxy.log"  # its own: the other scripts may run meanwhile
        configure_logging("info", stack.enter_context(proxy_log.open("w")))
        folder, db = build_docs_index(work)
        # As tests/conftest.py's llama fixture: a ChatML template that declares tools, since
        # Open WebUI sends its built-in tools and the test model lists the tools capability.
        template = HERE / "upstream" / "chatml-tools.jinja"
        llama = stack.enter_context(llama_server("--jinja", "--chat-template-file", str(template)))
        ollama = stack.enter_context(fake_ollama(llama.url))
        if args.capture_tools:
            return capture_tools(args.open_webui, ollama.url, work, args.capture_tools.resolve())
        proxy = stack.enter_context(
            ragproxy(
                upstream=ollama.url,
                upstream_api="ollama",
                model=MODEL,
                docs=(f"manuals={folder}",),
                db=str(db),
                num_ctx_max=2048,  # the llama slots hold 2048 tokens
            )
        )
        for connection in connections:
            try:
                result = run(connection, args.open_webui, proxy, ollama.url, work, proxy_log)
            except Exception as exc:  # report the failure and go on with the other connection
                result = RunResult(connection, notes=[f"run failed: {type(exc).__name__}: {exc}"])
            if connection == "openai" and not result.sources_shown:
                result.notes.append(f"ragproxy's events for an aiohttp client: {proxy_sse_evidence(proxy)}")
            results.append(result)

    print("\nOpen WebUI end-to-end summary")
    for r in results:
        verdict = "PASS" if r.passed else "FAIL"
        print(f"[{verdict}] {r.connection} connection ({r.seconds:.0f} s for the reply)")
        print(f"  (i)   canary in the upstream prompt: {'yes' if r.canary_upstream else 'NO'}")
        print(f"  (ii)  sources shown: {'yes' if r.sources_shown else 'NO'} ({r.sources_detail})")
        print(f"  (iii) fact in the reply: {'yes' if r.fact_in_reply else 'no'}; reply: {r.reply[:300]!r}")
        for note in r.notes:
            print(f"  note: {note}")
        if r.screenshot:
            print(f"  screenshot: {r.screenshot}")
    return 0 if results and all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
