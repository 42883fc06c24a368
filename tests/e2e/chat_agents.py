"""What the end-to-end scripts for agent CLIs on the OpenAI chat wire share (opencode.py,
copilot.py, continue_cli.py): the servers, a recording hop in front of ragproxy, a proxy that
refuses every connection to anywhere else, running the client, and the checks.

Everything runs on loopback: llama-server with the tiny test model (``--window`` tokens, one
slot), the Ollama-behaving test server in front of it (its OpenAI-compatible ``/v1``, as Ollama
serves beside its own API; it records each request it gets, tools included), ragproxy (in this
process) over tests/ragdocs.py's documents with ``upstream_api="openai"``, and a recording hop in
front of ragproxy that keeps each request body exactly as the client sent it (and ragproxy's
reply) before passing it on. The client talks to the hop as if it were ragproxy.

A run passes when:
(i)   the client exits 0 with an answer;
(ii)  ragproxy logged the ``POST /v1/chat/completions`` requests, each with status 200, and at
      least one with a passage sent (``rag_sources``);
(iii) the canary reached the upstream in the prompt;
(iv)  every tool the client sent in a request reached the upstream in the request ragproxy made
      for it (passes when the client sent no tools);
(v)   the client's printed output shows the sources: ragproxy's footnote ("Sources:" then
      "[1] <file>"), or the source file's name some other way.
Reported only: whether the answer states the fact (a 135M model may not), whether ragproxy's
reply itself carried the footnote, and any connection the client tried to open elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from proxy.logging import configure_logging  # noqa: E402
from tests.e2e.common import refusing_proxy  # noqa: E402
from tests.ragdocs import CANARY, QUESTION, build_docs_index  # noqa: E402
from tests.servers import HERE, fake_ollama, free_port, llama_server, ragproxy, wait_ready  # noqa: E402

MODEL = "smollm2:135m"
OUTPUT = Path(__file__).parent / "output"
CACHE = Path(
    os.environ.get("RAGPROXY_E2E_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragproxy-e2e"
)
CHAT_PATH = "/v1/chat/completions"
SOURCE_FILE = "zephyr.md"  # the document that holds the canary
# One llama slot holding the whole window. The model was trained on 8,192 tokens: past that
# llama-server stretches it with YaRN (without, it caps the slot at 8,192), as codex.py does.
WINDOWS: dict[int, tuple[str, ...]] = {
    8192: ("-c", "8192"),
    32768: ("-c", "32768", "--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "8192"),
}
# Two shared cores: an agent's prompt (thousands of tokens) takes the tiny model minutes to read.
TIMEOUT = 1800.0
_FOOTNOTE = re.compile(r"Sources:[ \t]*\r?\n(?:.*\n)*?\s*\[\d+\][^\n]*" + re.escape(SOURCE_FILE))


# -- the recording hop -------------------------------------------------------------------------
@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int | None = None
    reply: bytes = b""
    content_type: str = ""

    def reply_text(self) -> str:
        """The text of ragproxy's answer: the streamed deltas joined, or the message's content."""
        text = self.reply.decode("utf-8", "replace")
        if "event-stream" in self.content_type:
            parts = []
            for line in text.splitlines():
                if not line.startswith("data: {"):
                    continue
                try:
                    chunk = json.loads(line[6:])
                except json.JSONDecodeError:
                    continue
                for choice in chunk.get("choices") or ():
                    parts.append(str((choice.get("delta") or {}).get("content") or ""))
            return "".join(parts)
        try:
            reply = json.loads(text)
            return str(reply["choices"][0]["message"].get("content") or "")
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            return text


_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class Recorder:
    """An ASGI reverse proxy to ``target`` that keeps each request's body as the client sent it,
    and what came back; it streams the reply through as it arrives."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.exchanges: list[Exchange] = []
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5), trust_env=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await self.http.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        exchange = Exchange(scope["method"], scope["path"], headers, body)
        self.exchanges.append(exchange)
        url = (
            self.target
            + scope["path"]
            + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
        )
        forwarded = [(k, v) for k, v in scope["headers"] if k.decode("latin-1").lower() not in _HOP]
        request = self.http.build_request(scope["method"], url, headers=forwarded, content=raw)
        response = await self.http.send(request, stream=True)
        try:
            exchange.status = response.status_code
            exchange.content_type = response.headers.get("content-type", "")
            out = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in _HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for piece in response.aiter_raw():
                exchange.reply += piece
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    def chats(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == "POST" and e.path == CHAT_PATH]


@contextmanager
def recording(target: str) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(target)
    port = free_port()
    config = uvicorn.Config(recorder, host="127.0.0.1", port=port, log_level="critical", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", timeout=20)  # passed through to ragproxy
        yield f"http://127.0.0.1:{port}", recorder
    finally:
        server.should_exit = True
        thread.join(10)


def base_env(home: Path, refuser: str) -> dict[str, str]:
    """A client's environment: a fresh home and config folders of its own (nothing of the machine's
    user), and every connection but to loopback sent to the refusing proxy."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "CI": "1",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "TMPDIR": str(home / "tmp"),
        "HTTPS_PROXY": refuser,
        "HTTP_PROXY": refuser,
        "https_proxy": refuser,
        "http_proxy": refuser,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for sub in (".config", ".cache", ".local/share", ".local/state", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    return env


# -- a run ---------------------------------------------------------------------------------------
@dataclass
class Result:
    client: str
    window: int
    exit_code: int | None = None
    answer: str = ""
    printed: str = ""
    seconds: float = 0.0
    chat_logged: list[dict[str, Any]] = field(default_factory=list)
    canary_upstream: bool = False
    tools_sent: list[list[str]] = field(default_factory=list)  # per client request with tools
    tools_missing: list[list[str]] = field(default_factory=list)  # per such request, not upstream
    footnote_in_reply: bool = False
    outside: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return self.exit_code == 0 and bool(self.answer.strip())

    @property
    def rag_sent(self) -> bool:
        """Every chat request answered 200, and at least one with a passage sent."""
        return all(r.get("status") == 200 for r in self.chat_logged) and any(
            (r.get("rag_sources") or 0) >= 1 for r in self.chat_logged
        )

    @property
    def tools_upstream(self) -> bool:
        return not any(self.tools_missing)

    @property
    def sources_shown(self) -> str:
        """How the printed output shows the source: "footnote", "file name", or ""."""
        if _FOOTNOTE.search(self.printed):
            return "footnote"
        return "file name" if SOURCE_FILE in self.printed else ""

    @property
    def passed(self) -> bool:
        return (
            self.answered
            and self.rag_sent
            and self.canary_upstream
            and self.tools_upstream
            and bool(self.sources_shown)
        )


def run_client(
    name: str, args: list[str], env: dict[str, str], cwd: Path, timeout: float, result: Result
) -> tuple[str, str]:
    """Runs the client in a session of its own (a timeout stops it and its children), its stdout
    and stderr saved under OUTPUT; returns them."""
    out_file, err_file = OUTPUT / f"{name}-stdout.txt", OUTPUT / f"{name}-stderr.log"
    started = time.monotonic()
    with out_file.open("wb") as out, err_file.open("wb") as err:
        process = subprocess.Popen(
            args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
        )
        try:
            result.exit_code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            result.notes.append(f"{name} still running after {timeout:.0f} s: stopped")
        finally:
            try:  # whatever it left behind in its session (a local server, a helper)
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
    result.seconds = time.monotonic() - started
    stdout = out_file.read_text(encoding="utf-8", errors="replace")
    stderr = err_file.read_text(encoding="utf-8", errors="replace")
    return stdout, stderr


def tool_names(body: Any) -> list[str]:
    """The names of the tools in a chat request body (OpenAI's ``{"type": "function",
    "function": {"name"...}}``)."""
    names: list[str] = []
    tools = body.get("tools") if isinstance(body, dict) else None
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict):
            function = tool.get("function")
            names.append(str((function if isinstance(function, dict) else tool).get("name")))
    return names


def chat_records(log: Path) -> list[dict[str, Any]]:
    """ragproxy's log lines for ``POST /v1/chat/completions``."""
    records = []
    for line in log.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == "request" and record.get("path") == CHAT_PATH:
            records.append(record)
    return records


def _turn(body: Any) -> tuple[int, str]:
    """What identifies a chat request's turn in what ragproxy sends upstream: how many assistant
    messages it has, and the text of its last message (ragproxy adds its passages around the
    user's text, never instead of it)."""
    messages = (
        [m for m in (body.get("messages") or ()) if isinstance(m, dict)] if isinstance(body, dict) else []
    )
    assistants = sum(m.get("role") == "assistant" for m in messages)
    last = messages[-1].get("content") if messages else ""
    if isinstance(last, list):
        last = " ".join(str(p.get("text") or "") for p in last if isinstance(p, dict))
    return assistants, str(last or "")


def _forwarded(body: Any, unmatched: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The upstream request that ragproxy made for the client's ``body`` (taken out of
    ``unmatched``, which is in arrival order): the first that holds the same last message, one
    with the same number of assistant messages first (ragproxy may drop earlier turns to fit);
    None if none."""
    assistants, last = _turn(body)
    needle = json.dumps(last, ensure_ascii=False)[1:-1]
    ending = [c for c in unmatched if needle in json.dumps(c, ensure_ascii=False)]
    if not ending:
        return None
    # A request without tools (a title request beside the turn, as opencode sends) takes an
    # upstream request without tools first, so that the turn's own is left for the turn.
    with_tools = bool(tool_names(body))
    found = min(ending, key=lambda c: (_turn(c)[0] != assistants, bool(tool_names(c)) and not with_tools))
    unmatched.remove(found)
    return found


def check_servers(result: Result, recorder: Recorder, ollama_url: str, name: str) -> None:
    """(iii) and (iv) from what the upstream received; the recorded requests saved under OUTPUT."""
    records = httpx.get(ollama_url + "/_test/requests", timeout=10).json()
    (OUTPUT / f"{name}-upstream.json").write_text(json.dumps(records, indent=1, ensure_ascii=False))
    upstream = [r.get("body") for r in records if "chat" in str(r.get("path"))]
    result.canary_upstream = any(CANARY in json.dumps(body, ensure_ascii=False) for body in upstream)
    unmatched = [body for body in upstream if isinstance(body, dict)]
    for exchange in recorder.chats():
        forwarded = _forwarded(exchange.body, unmatched)
        sent = tool_names(exchange.body)
        if sent:
            result.tools_sent.append(sent)
            arrived = set(tool_names(forwarded))
            result.tools_missing.append([n for n in sent if n not in arrived])
        if re.search(r"Sources:\s*\n\s*\[\d+\]", exchange.reply_text()):
            result.footnote_in_reply = True
    saved = [
        {"method": e.method, "path": e.path, "status": e.status, "headers": e.headers, "body": e.body}
        for e in recorder.exchanges
    ]
    (OUTPUT / f"{name}-requests.json").write_text(json.dumps(saved, indent=1, ensure_ascii=False))


# -- captures ------------------------------------------------------------------------------------
def _texts(body: dict[str, Any], role: str) -> str:
    texts = []
    for message in body.get("messages") or ():
        if message.get("role") == role:
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
            texts.append(str(content or ""))
    return "\n".join(texts)


def request_kind(body: Any) -> str:
    """What a chat request is for, from its prompts: "chat" (a turn on the user's question, with
    the client's tools), "continuation" (the client asks the model to go on after a reply it
    cut), or a request without tools named by what its system prompt asks for ("title",
    "summary", "compaction"); "other" if none of these."""
    if not isinstance(body, dict):
        return "other"
    if not body.get("tools"):
        system = _texts(body, "system").lower()
        for word, kind in (("title", "title"), ("summar", "summary"), ("compact", "compaction")):
            if word in system:
                return kind
    users = [m for m in body.get("messages") or () if m.get("role") == "user"]
    last = _texts({"messages": users[-1:]}, "user").strip().strip('"')
    if last.endswith(QUESTION):  # Copilot puts a <current_datetime> tag before it
        return "chat"
    if "continue" in last.lower():
        return "continuation"
    if body.get("tools"):
        return "chat"
    return "other"


def save_captures(recorder: Recorder, folder: Path, client: str, version: str) -> list[Path]:
    """Each chat request body as the client sent it: ``<client>-<version>-<kind>-request.json``
    (a second one of a kind gets ``-2``...)."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    counts: dict[str, int] = {}
    for exchange in recorder.chats():
        kind = request_kind(exchange.body)
        counts[kind] = counts.get(kind, 0) + 1
        suffix = "" if counts[kind] == 1 else f"-{counts[kind]}"
        path = folder / f"{client}-{version}-{kind}-request{suffix}.json"
        path.write_text(json.dumps(exchange.body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


# -- the whole run -------------------------------------------------------------------------------
@dataclass
class Servers:
    url: str  # the recording hop in front of ragproxy
    recorder: Recorder
    ollama_url: str
    work: Path


@contextmanager
def servers(name: str, window: int) -> Iterator[Servers]:
    """llama-server, the Ollama-behaving server, ragproxy (its log: OUTPUT/<name>-ragproxy.log) and
    the recording hop, over a fresh index of tests/ragdocs.py's documents."""
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ragproxy-e2e-")))
        configure_logging("info", stack.enter_context((OUTPUT / f"{name}-ragproxy.log").open("w")))
        folder, db = build_docs_index(work)
        # As tests/conftest.py's llama fixture: a ChatML template that declares tools, since
        # agents send their own. One slot with the whole window.
        template = HERE / "upstream" / "chatml-tools.jinja"
        llama = stack.enter_context(
            llama_server("--jinja", "--chat-template-file", str(template), *WINDOWS[window], slots=1)
        )
        ollama = stack.enter_context(fake_ollama(llama.url))
        proxy = stack.enter_context(
            ragproxy(
                upstream=ollama.url,
                upstream_api="openai",
                model=MODEL,
                docs=(f"manuals={folder}",),
                db=str(db),
                context_window=window,  # Ollama's /v1 has no /props to ask
            )
        )
        url, recorder = stack.enter_context(recording(proxy))
        yield Servers(url, recorder, ollama.url, work)


def main_run(
    client: str,
    title: str,
    window: int,
    capture: Path | None,
    version: str,
    run: Callable[[Servers, Path, Path, str, Result], None],
) -> int:
    """One run of ``client``: the servers, ``run`` (which starts the client in an empty project
    folder with a fresh home, through the refusing proxy, and fills the answer and printed
    output), the checks, the summary; with ``capture``, the request bodies saved there."""
    # A plain SIGTERM would skip the clean-ups and leave llama-server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUTPUT.mkdir(exist_ok=True)
    print(f"{title} {version}, window {window}", flush=True)
    result = Result(client, window)
    with servers(client, window) as running:
        home, project = running.work / "home", running.work / "project"
        home.mkdir()
        project.mkdir()
        with refusing_proxy() as (refuser, seen):
            try:
                run(running, home, project, refuser, result)
            except Exception as exc:  # report it with what the servers saw
                result.notes.append(f"run failed: {type(exc).__name__}: {exc}")
            result.outside = list(seen)
        check_servers(result, running.recorder, running.ollama_url, client)
        if capture is not None:
            for path in save_captures(running.recorder, capture, client, version):
                result.notes.append(f"captured {path}")
    result.chat_logged = chat_records(OUTPUT / f"{client}-ragproxy.log")
    print_summary(title, result)
    return 0 if result.passed else 1


def yes(value: bool) -> str:
    return "yes" if value else "NO"


def print_summary(title: str, r: Result) -> None:
    facts: tuple[str, ...] = ("status", "stream", "rag_sources", "rag_found", "rag_skipped")
    facts += ("prompt_tokens", "completion_tokens", "finish_reason", "truncated", "error", "duration_ms")
    verdict = "PASS" if r.passed else "FAIL"
    print(f"\n{title} end-to-end summary: {verdict} (window {r.window}, {r.seconds:.0f} s)")
    print(f"  (i)   exit code: {r.exit_code}; an answer: {yes(bool(r.answer.strip()))}")
    logged = len(r.chat_logged)
    print(f"  (ii)  ragproxy logged {logged} POST {CHAT_PATH}; all 200 and a passage sent: {yes(r.rag_sent)}")
    for record in r.chat_logged:
        print("          " + ", ".join(f"{k}={record.get(k)}" for k in facts if k in record))
    print(f"  (iii) canary in the upstream prompt: {yes(r.canary_upstream)}")
    if not r.tools_sent:
        print("  (iv)  tools reached the upstream: n/a (the client sent none)")
    else:
        print(f"  (iv)  tools reached the upstream: {yes(r.tools_upstream)}")
        for sent, missing in zip(r.tools_sent, r.tools_missing, strict=True):
            print(f"          sent {len(sent)} tools, {len(missing)} missing upstream: {missing or ''}")
    shown = r.sources_shown
    print(f"  (v)   sources shown by the client: {shown or 'NO'}")
    print(
        f"  ragproxy's reply carried the footnote: {'yes' if r.footnote_in_reply else 'no'} (reported only)"
    )
    print(f"  fact in the answer: {'yes' if CANARY in r.answer else 'no'} (reported only)")
    print(f"  connections refused outside loopback: {r.outside or 'none'} (reported only)")
    print(f"  answer: {r.answer[:600]!r}")
    for note in r.notes:
        print(f"  note: {note}")
    print(f"  output: {OUTPUT}/{r.client}-*")
