"""What the end-to-end scripts for Python clients (aider.py, llm_cli.py, litellm.py) share: the
servers, a recording reverse proxy in front of ragproxy, a refusing proxy for anything a client
would open outside loopback, the checks and the summary. The agents' scripts (claude_code.py,
codex.py) use its servers (with an Ollama upstream too), recording proxy and checks.

Everything runs on loopback, as codex.py does: llama-server with the tiny test model (one slot;
``--window 32768`` stretches the model's 8,192 tokens with YaRN), the Ollama-behaving test server
in front of it (its OpenAI-compatible ``/v1``, as Ollama serves beside its own API; it records
what reaches the model), ragproxy in this process over tests/ragdocs.py's documents with
``upstream_api="openai"``, and, between the client and ragproxy, a reverse proxy that records
each request exactly as the client sent it (headers and body) and passes it on untouched.

A run passes when:
(i)   the client exits 0 with an answer;
(ii)  ragproxy logged the chat request with status 200 and at least one passage sent
      (``rag_sources``);
(iii) the canary reached the upstream in the prompt;
(iv)  the tools the client sent, if any, reached the upstream (by name);
(v)   the client showed the sources to the user: its printed output holds ragproxy's footnote
      ("Sources:" then "[1] <file>").
Reported only: whether the answer states the fact (a 135M model may not), what the client sent
(User-Agent, body keys) and any connection it tried to open outside loopback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import httpx  # noqa: E402
import uvicorn  # noqa: E402

from proxy.logging import configure_logging  # noqa: E402
from proxy.pipeline.context import answer_reserve  # noqa: E402
from proxy.settings import Settings  # noqa: E402
from tests.ragdocs import CANARY, QUESTION, build_docs_index  # noqa: E402
from tests.servers import HERE, fake_ollama, free_port, llama_server, ragproxy, wait_ready  # noqa: E402

# The name the upstream's /v1/models lists (llama-server's alias, passed on by the Ollama-behaving
# server): with an OpenAI-compatible upstream ragproxy answers an Ollama client's request for a
# model not listed there with a 404, as Ollama would.
MODEL = "smollm2"
OUTPUT = Path(__file__).parent / "output"
CACHE = Path(
    os.environ.get("RAGPROXY_E2E_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragproxy-e2e"
)
# 8192: the model's own training window. 32768: as codex.py, stretched with YaRN (without it
# llama-server caps the slot at 8192).
WINDOWS = {
    8192: ("-c", "8192"),
    32768: ("-c", "32768", "--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "8192"),
}
CHAT_PATHS = ("/v1/chat/completions", "/api/chat")
# ragproxy's footnote as a person reads it: the heading, then the first source naming the file.
FOOTNOTE = re.compile(r"Sources:[ \t]*\r?\n\s*\[1\] [^\n]*zephyr\.md")
SOURCE_FILE = "zephyr.md"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
# Headers left out of a saved capture: they change from run to run and say nothing of the client.
UNSAVED_HEADERS = {"host", "content-length"}


def plain(text: str) -> str:
    """``text`` without terminal escapes and carriage returns."""
    return ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


def package_version(python: Path, package: str) -> str:
    """The installed version of ``package`` in the venv whose interpreter is ``python``."""
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() or "unknown"


# -- the recording reverse proxy ------------------------------------------------------------------
class Recorder:
    """An ASGI reverse proxy: records each request (method, path, headers, JSON body) and passes
    it to ``target`` as it came, the response back as it comes (raw bytes, streamed)."""

    HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}

    def __init__(self, target: str) -> None:
        self.target = target
        self.records: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        query = scope.get("query_string", b"").decode("latin-1")
        record = {
            "method": scope["method"],
            "path": scope["path"] + (f"?{query}" if query else ""),
            "headers": dict(headers),
            "body": parsed,
            "started": time.time(),
        }
        self.records.append(record)
        forwarded = [(k, v) for k, v in headers if k.lower() not in self.HOP]
        async with httpx.AsyncClient(timeout=None, trust_env=False) as client:
            for name in list(client.headers):  # only what the client sent
                del client.headers[name]
            request = client.build_request(
                scope["method"], self.target + record["path"], headers=forwarded, content=body
            )
            async with anyio.create_task_group() as tasks:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    record["disconnected"] = True
                    tasks.cancel_scope.cancel()

                async def relay() -> None:
                    response = await client.send(request, stream=True)
                    try:
                        record["status"] = response.status_code
                        out = [(k, v) for k, v in response.headers.raw if k.lower().decode() not in self.HOP]
                        await send(
                            {"type": "http.response.start", "status": response.status_code, "headers": out}
                        )
                        async for chunk in response.aiter_raw():
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    finally:
                        await response.aclose()
                    tasks.cancel_scope.cancel()

                tasks.start_soon(watch)
                tasks.start_soon(relay)


@contextmanager
def recording_proxy(target: str) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(target)
    port = free_port()
    config = uvicorn.Config(recorder, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    config.log_level = "critical"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/healthz", timeout=20)
        recorder.records.clear()  # the readiness probe
        yield url, recorder
    finally:
        server.should_exit = True
        thread.join(10)


# -- the refusing proxy (as claude_code.py's) --------------------------------------------------------
class Refuser(BaseHTTPRequestHandler):
    """An HTTP(S) proxy that opens nothing: every request is recorded and answered 403."""

    seen: list[str]

    def refuse(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    do_CONNECT = do_GET = do_POST = do_PUT = do_HEAD = do_OPTIONS = refuse

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def refusing_proxy() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (Refuser,), {"seen": seen}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def client_env(home: Path, refuser: str, **extra: str) -> dict[str, str]:
    """A client's whole environment: a fresh home, nothing of the machine's user, and every
    connection outside loopback sent to the refusing proxy."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "TMPDIR": str(home / "tmp"),
        "HTTPS_PROXY": refuser,
        "HTTP_PROXY": refuser,
        "https_proxy": refuser,
        "http_proxy": refuser,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(extra)
    return env


# -- a run -------------------------------------------------------------------------------------------
@dataclass
class Stack:
    url: str  # the recording proxy, in front of ragproxy: what the client is given
    ollama: str
    recorder: Recorder
    proxy_log: Path
    work: Path


@dataclass
class Result:
    client: str
    mode: str
    window: int
    version: str = ""
    exit_code: int | None = None
    answer: str = ""
    output: str = ""  # what the client printed for the user (stdout, escapes removed)
    seconds: float = 0.0
    chat_logged: list[dict[str, Any]] = field(default_factory=list)
    canary_upstream: bool = False
    client_tools: list[str] = field(default_factory=list)
    upstream_tools: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return self.exit_code == 0 and bool(self.answer.strip())

    @property
    def rag_sent(self) -> bool:
        return any(r.get("status") == 200 and (r.get("rag_sources") or 0) >= 1 for r in self.chat_logged)

    @property
    def tools_reached(self) -> bool:
        return set(self.client_tools) <= set(self.upstream_tools)

    @property
    def sources_shown(self) -> bool:
        return FOOTNOTE.search(self.output) is not None

    @property
    def passed(self) -> bool:
        return (
            self.answered
            and self.rag_sent
            and self.canary_upstream
            and self.tools_reached
            and self.sources_shown
        )


@contextmanager
def servers(
    name: str,
    window: int,
    upstream: str = "openai",
    model: str = MODEL,
    llama_args: tuple[str, ...] = (),
    **settings: Any,
) -> Iterator[Stack]:
    """llama-server, the Ollama-behaving server, ragproxy (its log in output/<name>-ragproxy.log)
    and the recording proxy in front of it. ``upstream="ollama"``: ragproxy talks to the
    Ollama-behaving server's native API and learns the window from its /api/show (made to report
    ``window``, the model left to choose whether to call a tool, as with Ollama); else to its /v1
    with ``context_window`` set, as Ollama's /v1 has no /props to ask."""
    OUTPUT.mkdir(exist_ok=True)
    proxy_log = OUTPUT / f"{name}-ragproxy.log"  # its own: the other scripts may run meanwhile
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ragproxy-e2e-")))
        configure_logging("info", stack.enter_context(proxy_log.open("w")))
        folder, db = build_docs_index(work)
        # As codex.py: a ChatML template that declares tools, for clients that send them.
        template = HERE / "upstream" / "chatml-tools.jinja"
        llama = stack.enter_context(
            llama_server(
                "--jinja", "--chat-template-file", str(template), *WINDOWS[window], *llama_args, slots=1
            )
        )
        if upstream == "ollama":
            ollama = stack.enter_context(fake_ollama(llama.url, context_length=window, tool_choice="auto"))
            settings.update(upstream_api="ollama")
        else:
            ollama = stack.enter_context(fake_ollama(llama.url))
            settings.update(upstream_api="openai", context_window=window)
        proxy = stack.enter_context(
            ragproxy(upstream=ollama.url, model=model, docs=(f"manuals={folder}",), db=str(db), **settings)
        )
        url, recorder = stack.enter_context(recording_proxy(proxy))
        yield Stack(url, ollama.url, recorder, proxy_log, work)


def run_client(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float, result: Result, stem: str
) -> tuple[str, str]:
    """Runs the client in a session of its own (a timeout stops it and its children); its
    stdout and stderr are saved as output/<stem>-stdout.txt and -stderr.txt."""
    started = time.monotonic()
    out_file, err_file = OUTPUT / f"{stem}-stdout.txt", OUTPUT / f"{stem}-stderr.txt"
    with out_file.open("wb") as out, err_file.open("wb") as err:
        process = subprocess.Popen(
            args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
        )
        try:
            result.exit_code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
            result.notes.append(f"client still running after {timeout:.0f} s: stopped")
    result.seconds = time.monotonic() - started
    stdout = out_file.read_text(encoding="utf-8", errors="replace")
    stderr = err_file.read_text(encoding="utf-8", errors="replace")
    result.output = plain(stdout)
    if stderr.strip():
        result.notes.append(f"client's stderr (last 400 characters): {plain(stderr).strip()[-400:]!r}")
    return stdout, stderr


def tool_names(body: Any) -> list[str]:
    names = []
    tools = body.get("tools") if isinstance(body, dict) else None
    for tool in tools or ():
        if isinstance(tool, dict):
            function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
            names.append(str(function.get("name")))
    return names


def collect(stack: Stack, result: Result, stem: str) -> None:
    """What ragproxy logged, what reached the upstream and what the client sent."""
    for line in stack.proxy_log.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "request" and record.get("path") in CHAT_PATHS:
            result.chat_logged.append(record)
    upstream = httpx.get(stack.ollama + "/_test/requests", timeout=10).json()
    (OUTPUT / f"{stem}-upstream.json").write_text(json.dumps(upstream, indent=1, ensure_ascii=False))
    chats = [r for r in upstream if "chat" in str(r.get("path"))]
    result.canary_upstream = any(CANARY in json.dumps(r.get("body"), ensure_ascii=False) for r in chats)
    result.upstream_tools = sorted({name for r in chats for name in tool_names(r.get("body"))})
    result.requests = list(stack.recorder.records)
    (OUTPUT / f"{stem}-client-requests.json").write_text(
        json.dumps(result.requests, indent=1, ensure_ascii=False)
    )
    result.client_tools = sorted(
        {name for r in result.requests if r["path"] in CHAT_PATHS for name in tool_names(r.get("body"))}
    )


def saved(record: dict[str, Any]) -> dict[str, Any]:
    headers = {k: v for k, v in record["headers"].items() if k.lower() not in UNSAVED_HEADERS}
    return {"method": record["method"], "path": record["path"], "headers": headers, "body": record["body"]}


def capture(result: Result, directory: Path) -> list[Path]:
    """Saves what the client sent as <client>-<version>-<mode>-request.json (its first chat
    request), with any other request beside it: -request-2.json... for further chat requests
    (a housekeeping request such as a summary), -<method>-<path>-request.json for other paths.
    A request the same as one saved (a retry) is not saved again."""
    directory.mkdir(parents=True, exist_ok=True)
    prefix = f"{result.client}-{result.version}-{result.mode}"
    written: list[Path] = []
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for record in result.requests:
        key = json.dumps([record["method"], record["path"], record["body"]], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        if record["path"] in CHAT_PATHS:
            kind = "chat"
        else:
            slug = re.sub(r"[^a-z0-9]+", "-", record["path"].lower()).strip("-")
            kind = f"{record['method'].lower()}-{slug}"
        counts[kind] = counts.get(kind, 0) + 1
        stem = prefix if kind == "chat" else f"{prefix}-{kind}"
        number = "" if counts[kind] == 1 else f"-{counts[kind]}"
        path = directory / f"{stem}-request{number}.json"
        path.write_text(json.dumps(saved(record), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


# -- for the agents (claude_code.py, codex.py) ----------------------------------------------------
# A user's text longer than this is saved shortened (the start kept): what an agent sends around
# the question (its reminders, the files it read) makes a capture large without saying more.
KEPT_CHARACTERS = 2000
# Messages whose text is saved whole: the instructions (a system prompt, Codex's developer notes).
WHOLE_ROLES = {"system", "developer"}


def _shortened(value: Any) -> Any:
    if isinstance(value, str) and len(value) > KEPT_CHARACTERS:
        return value[:KEPT_CHARACTERS] + f"[... {len(value) - KEPT_CHARACTERS} characters left out]"
    if isinstance(value, list):
        return [_shortened(item) for item in value]
    if isinstance(value, dict):
        return {k: _shortened(v) for k, v in value.items()}
    return value


def shortened_body(body: Any) -> Any:
    """A request body with each long text of the conversation (the Anthropic ``messages``, the
    Responses ``input``) cut to its first KEPT_CHARACTERS characters, but the system and
    developer messages: the tool definitions and the instructions are kept whole."""
    if not isinstance(body, dict):
        return body
    out = dict(body)
    for key in ("messages", "input"):
        if isinstance(body.get(key), list):
            out[key] = [
                item if isinstance(item, dict) and item.get("role") in WHOLE_ROLES else _shortened(item)
                for item in body[key]
            ]
        elif isinstance(body.get(key), str):
            out[key] = _shortened(body[key])
    return out


def save_request(record: dict[str, Any], path: Path) -> Path:
    """One request the client sent, as tests/data/clients keeps it (its long texts shortened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = saved(record)
    kept["body"] = shortened_body(kept["body"])
    path.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def offered_tools(body: Any) -> tuple[list[str], list[str]]:
    """The tools a request offers: the names of those that have one (functions, Anthropic's and
    the Responses API's custom tools; a Responses ``namespace``'s tools as ``<namespace>.<name>``,
    as ragproxy offers them to a chat upstream), and the types of those that do not (a server's
    built-in tool such as ``web_search``)."""
    names, types = [], []
    tools = body.get("tools") if isinstance(body, dict) else None
    for tool in tools or ():
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "namespace" and isinstance(tool.get("tools"), list):
            inner, _ = offered_tools({"tools": tool["tools"]})
            names.extend(f"{tool.get('name')}.{name}" for name in inner)
            continue
        function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        if function.get("name"):
            names.append(str(function["name"]))
        else:
            types.append(str(tool.get("type")))
    return names, types


def upstream_records(ollama: str) -> list[dict[str, Any]]:
    """The chat requests the Ollama-behaving server received (/api/chat or its /v1)."""
    records = httpx.get(ollama + "/_test/requests", timeout=10).json()
    return [r for r in records if "chat" in str(r.get("path"))]


def log_records(log: Path, paths: tuple[str, ...], offset: int = 0) -> list[dict[str, Any]]:
    """ragproxy's request log records for ``paths`` from byte ``offset`` of its log on."""
    records = []
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "request" and record.get("path") in paths:
                records.append(record)
    return records


def reserve_for(client_limit: Any, window: int) -> int:
    """The room ragproxy keeps for the answer in a ``window``, for a client's output limit."""
    return answer_reserve({"max_tokens": client_limit}, Settings(), window)


def num_ctx_checked(record: dict[str, Any], client_limit: Any) -> tuple[bool, str]:
    """Criterion (vi) for one request ragproxy retrieved for, with an Ollama upstream: the
    ``num_ctx`` it asked for holds the prompt as the model read it and the room for the answer,
    and it sent a passage."""
    num_ctx, prompt, window = record.get("num_ctx"), record.get("prompt_tokens"), record.get("context_window")
    if not isinstance(window, int) or not isinstance(prompt, int) or not isinstance(num_ctx, int):
        return False, f"num_ctx={num_ctx}, prompt_tokens={prompt}, window={window}: not all logged"
    reserve = reserve_for(client_limit, window)
    sources = record.get("rag_sources") or 0
    ok = num_ctx >= prompt + reserve and sources >= 1
    return ok, (
        f"num_ctx={num_ctx} {'>=' if num_ctx >= prompt + reserve else '<'} prompt_tokens={prompt} + "
        f"reserve={reserve} (window {window}); rag_sources={sources}"
    )


# How a refusal of a prompt over the window reads: ragproxy's own, llama-server's (which ragproxy
# relays), Ollama's.
TOO_LONG = re.compile(
    r"context_length_exceeded|exceed\w* the available context size|exceed_context_size|window"
)


def window_too_small(records: list[dict[str, Any]], shown: str) -> str | None:
    """The refusal of a prompt larger than the window, when ragproxy answered a 400 and the client
    showed why (``shown``; ragproxy's log has only the error's type): the client's own prompt
    (instructions and tools) leaves no room, whatever ragproxy adds."""
    refused = any(record.get("status") == 400 for record in records)
    found = TOO_LONG.search(shown)
    if refused and found:
        start = max(0, found.start() - 200)
        return shown[start : found.end() + 200]
    return None


def summary(result: Result, title: str) -> int:
    facts = ("method", "path", "status", "stream", "rag_sources", "rag_found", "prompt_tokens")
    facts += ("completion_tokens", "finish_reason", "error", "duration_ms")
    verdict = "PASS" if result.passed else "FAIL"
    print(
        f"\n{title} end-to-end summary: {verdict} ({result.client} {result.version}, {result.mode} mode, "
        f"window {result.window}, {result.seconds:.0f} s for the client)"
    )
    print(f"  (i)   exit code: {result.exit_code}; an answer: {'yes' if result.answer.strip() else 'NO'}")
    print(
        f"  (ii)  ragproxy logged {len(result.chat_logged)} chat request(s); a passage sent: "
        f"{'yes' if result.rag_sent else 'NO'}"
    )
    for record in result.chat_logged:
        print("          " + ", ".join(f"{k}={record.get(k)}" for k in facts if k in record))
    print(f"  (iii) canary in the upstream prompt: {'yes' if result.canary_upstream else 'NO'}")
    if result.client_tools:
        reached = "yes" if result.tools_reached else "NO"
        print(
            f"  (iv)  tools sent by the client reached the upstream: {reached} "
            f"(sent {result.client_tools}; upstream got {result.upstream_tools})"
        )
    else:
        print("  (iv)  tools: the client sent none (nothing to check)")
    shown = "yes" if result.sources_shown else "NO"
    elsewhere = SOURCE_FILE in result.output
    print(
        f"  (v)   sources shown to the user (footnote 'Sources:' / '[1] ...{SOURCE_FILE}' in the output): "
        f"{shown}; the file name anywhere in the output: {'yes' if elsewhere else 'no'}"
    )
    print(f"  fact in the answer: {'yes' if CANARY in result.answer else 'no'} (reported only)")
    print(f"  answer: {result.answer.strip()[:600]!r}")
    for record in result.requests:
        body = record.get("body")
        keys = sorted(body) if isinstance(body, dict) else type(body).__name__
        options = (
            sorted(body["options"])
            if isinstance(body, dict) and isinstance(body.get("options"), dict)
            else None
        )
        print(
            f"  client sent: {record['method']} {record['path']} -> {record.get('status')}; "
            f"User-Agent {record['headers'].get('user-agent')!r}; body keys {keys}"
            + (f"; options {json.dumps(body['options'])}" if options else "")
        )
    print(f"  connections refused outside loopback: {result.outside or 'none'}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"  output: {OUTPUT}")
    return 0 if result.passed else 1


__all__ = [
    "CACHE",
    "CANARY",
    "MODEL",
    "OUTPUT",
    "QUESTION",
    "WINDOWS",
    "Result",
    "Stack",
    "capture",
    "client_env",
    "collect",
    "package_version",
    "refusing_proxy",
    "run_client",
    "servers",
    "summary",
]
