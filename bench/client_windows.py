"""What each real client's request becomes at 8k, 16k and 32k windows: the tools kept or dropped,
the passages sent, the prompt's estimate, the answer's reserve, Ollama's num_ctx, and whether the
reply carries the "[ragproxy]" note (no room for any passage) or the request is refused.

Each captured request has its last question replaced by tests/ragdocs.py's QUESTION (the client's
own wrappers kept: Claude Code's ``<system-reminder>`` part, aider's "Reply in English."), is
converted to a chat body as ragproxy converts it (Anthropic Messages by
``proxy/api/anthropic_wire.py``, Responses by ``proxy/api/responses_wire.py``; chat bodies, OpenAI's
or Ollama's, as they are), and is sent to ``POST /v1/rag/preview`` of a real ragproxy (in this
process, ``tests/servers.py``) over tests/ragdocs.py's index, with the client's own User-Agent:
retrieval and ``fit_call`` run as for a chat, the model is never called. Settings:

- ``fixed``: a fixed window (llama.cpp-like): ``--context-window W``, ``--upstream-api openai``,
  before a stand-in that cannot count a prompt (the estimate decides, as before an
  OpenAI-compatible server without ``/tokenize``);
- ``fixed+count`` (``--count``): the same before the tests' llama-server (SmolLM2's tokenizer,
  ``--jinja`` with Qwen 2.5's template, as bench/tool_tokens.py runs it), which counts a prompt
  that could pass the room: a count over the window is refused (400 context_length_exceeded);
- ``ollama``: ``--upstream-api ollama`` before a stand-in whose ``/api/show`` reports a trained
  context of 131,072 (as DeepSeek-R1's does) and the tools capability, ``--num-ctx-max W``.

Clients: Claude Code and Codex (``<data>/clients``), Open WebUI (``tests/data/open-webui-tools.json``
with a one-question chat, its aiohttp User-Agent), and every ``tests/data/clients/*-request.json``
with a chat body present at run time (others, such as ``/api/show``, are skipped). Each client
gets a model name of its own, so one client's num_ctx (ragproxy never lowers a model's) does not
raise the next one's.

    .venv/bin/python bench/client_windows.py [--data ../shared/data] [--windows 8192,16384,32768] [--count]
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402

from proxy.api import anthropic_wire, responses_wire  # noqa: E402
from proxy.logging import configure_logging  # noqa: E402
from proxy.pipeline import context  # noqa: E402
from tests.ragdocs import QUESTION, build_docs_index  # noqa: E402

TRAINED_CONTEXT = 131072  # DeepSeek-R1's context_length in Ollama's /api/show
QWEN25 = Path(ROOT) / "bench" / "data" / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja"
OPEN_WEBUI_AGENT = "Python/3.11 aiohttp/3.12.15"  # Open WebUI's aiohttp session


@dataclass
class Client:
    label: str
    body: dict[str, Any]  # a chat body (OpenAI's, or Ollama's /api/chat)
    user_agent: str


# -- the clients' requests -------------------------------------------------------------------------
def _ask(text: str) -> str:
    """The client's question replaced by QUESTION (kept where it already is, with its wrapper)."""
    return text if QUESTION in text else QUESTION


def _ask_in(message: dict[str, Any], text_type: str) -> None:
    """The last text of a message (a string, or the last text part of a list) asked anew."""
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = _ask(content)
        return
    parts = [p for p in content or () if isinstance(p, dict) and p.get("type") == text_type]
    if parts:
        parts[-1]["text"] = _ask(parts[-1]["text"])
    else:
        message["content"] = QUESTION


def _last(items: list[dict[str, Any]], role: str) -> dict[str, Any]:
    return next(m for m in reversed(items) if m.get("role") == role)


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-")


def clients(data: Path) -> list[Client]:
    out: list[Client] = []
    path = data / "clients" / "claude-code-2.1.197-messages-request.json"
    if path.exists():
        captured = json.loads(path.read_text(encoding="utf-8"))
        body = copy.deepcopy(captured["body"])
        _ask_in(_last(body["messages"], "user"), "text")  # the <system-reminder> part stays
        chat, _ = anthropic_wire.to_chat(body, "claude-code")
        out.append(Client("Claude Code 2.1.197", chat, captured["headers"]["User-Agent"]))
    else:
        print(f"{path} not found; skipped", file=sys.stderr)
    path = data / "clients" / "codex-0.171.0-responses-request.json"
    if path.exists():
        captured = json.loads(path.read_text(encoding="utf-8"))
        body = copy.deepcopy(captured["body"])
        _ask_in(_last(body["input"], "user"), "input_text")  # <environment_context> is its own item
        chat, _ = responses_wire.to_chat(body)
        out.append(Client("Codex 0.171.0", chat, captured["headers"]["user-agent"]))
    else:
        print(f"{path} not found; skipped", file=sys.stderr)
    tools = json.loads((Path(ROOT) / "tests" / "data" / "open-webui-tools.json").read_text(encoding="utf-8"))
    webui = {"stream": True, "messages": [{"role": "user", "content": QUESTION}], "tools": tools["tools"]}
    out.append(Client("Open WebUI 0.12.4", webui, OPEN_WEBUI_AGENT))
    for path in sorted((Path(ROOT) / "tests" / "data" / "clients").glob("*-request.json")):
        captured = json.loads(path.read_text(encoding="utf-8"))
        if "body" not in captured:  # a chat body alone (the agent CLIs' captures)
            captured = {"path": "/v1/chat/completions", "body": captured}
        body = copy.deepcopy(captured.get("body"))
        chat = captured.get("path") in ("/v1/chat/completions", "/api/chat")
        if not chat or not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            print(f"{path.name}: not a chat request; skipped", file=sys.stderr)
            continue
        _ask_in(_last(body["messages"], "user"), "text")
        headers = {k.lower(): v for k, v in (captured.get("headers") or {}).items()}
        label = path.name.removesuffix("-request.json")
        out.append(Client(label, body, headers.get("user-agent", "")))
    return out


# -- the upstreams ---------------------------------------------------------------------------------
class _StandIn(BaseHTTPRequestHandler):
    """An upstream that answers only what the fitting asks: Ollama's /api/show (the trained
    context, the tools capability) and the model lists; 404 to anything else (no /tokenize)."""

    def _reply(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/api/tags":
            self._reply(200, {"models": []})
        elif self.path == "/v1/models":
            self._reply(200, {"object": "list", "data": []})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path == "/api/show":
            info = {"general.architecture": "qwen2", "qwen2.context_length": TRAINED_CONTEXT}
            self._reply(200, {"model_info": info, "capabilities": ["completion", "tools", "thinking"]})
        else:
            self._reply(404, {"error": "not found"})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextmanager
def stand_in() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- one run ---------------------------------------------------------------------------------------
def row(client: Client, model: str, url: str, setting: str, window: int) -> dict[str, Any]:
    body = {**client.body, "model": model}
    tools = len(body.get("tools") or ())
    estimate = context.tools_tokens(body)
    reply = httpx.post(
        url + "/v1/rag/preview", json=body, headers={"User-Agent": client.user_agent}, timeout=120
    )
    out: dict[str, Any] = {
        "client": client.label,
        "window": window,
        "setting": setting,
        "tools": tools,
        "tools_estimate": estimate,
    }
    if reply.status_code != 200:
        error = reply.json().get("error") or {}
        out["refused"] = f"{reply.status_code} {error.get('code') or error.get('message', '')[:60]}"
        return out
    preview = reply.json()
    sent_tools = len(preview["upstream"]["body"].get("tools") or ())
    tokens, rag = preview["tokens"], preview["rag"]
    out.update(
        tools_sent=sent_tools,
        found=rag.get("found", 0),
        sent=rag.get("sent", 0),
        prompt=tokens["prompt_estimate"],
        reserve=tokens["reserved_for_answer"],
        fitted_window=tokens["window"],
        num_ctx=tokens["num_ctx"],
        history_dropped=tokens["history_dropped"],
        no_room=rag.get("no_room"),
        tools_dropped=rag.get("tools_dropped"),
        skipped=rag.get("skipped"),
    )
    return out


def tools_cell(r: dict[str, Any]) -> str:
    if not r["tools"]:
        return "none"
    if "tools_sent" not in r:
        kept = str(r["tools"])
    else:
        kept = f"{r['tools_sent']} kept" if r["tools_sent"] else f"{r['tools']} dropped"
    return f"{kept} ({r['tools_estimate']:,})"


def cells(r: dict[str, Any]) -> list[str]:
    """A row's cells after the client, the window and the setting."""
    if "refused" in r:
        return [tools_cell(r), "", "", "", "", f"refused: {r['refused']}"]
    if r.get("skipped"):
        outcome = f"no retrieval ({r['skipped']})"
    elif r["no_room"]:
        outcome = "[ragproxy] note"
    elif r["sent"] < r["found"]:
        outcome = f"{r['sent']}/{r['found']} passages fit"
    else:
        outcome = "passages sent"
    if r["prompt"] > r["fitted_window"]:
        outcome += f"; prompt over the {r['fitted_window']:,} window"
    elif r["prompt"] + r["reserve"] > r["fitted_window"]:
        outcome += f"; prompt and the answer's reserve over the {r['fitted_window']:,} window"
    elif r["fitted_window"] != r["window"]:
        outcome += f"; fitted to {r['fitted_window']:,} (the client's num_ctx)"
    if r["history_dropped"]:
        outcome += f"; {r['history_dropped']} earlier message(s) dropped"
    return [
        tools_cell(r),
        f"{r['found']}/{r['sent']}",
        f"{r['prompt']:,}",
        f"{r['reserve']:,}",
        f"{r['num_ctx']:,}" if r["num_ctx"] else "-",
        outcome,
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """One line a client, setting and run of windows that came out the same."""
    head = (
        "| client | setting | window | tools sent (estimate) | passages found/sent | prompt | reserve "
        "| num_ctx | outcome |"
    )
    lines = [head, "|" + "---|" * 9]
    merged: list[tuple[dict[str, Any], list[int], list[str]]] = []
    for r in rows:
        last = merged[-1] if merged else None
        same = last and (last[0]["client"], last[0]["setting"]) == (r["client"], r["setting"])
        if last and same and last[2] == cells(r):
            last[1].append(r["window"])
        else:
            merged.append((r, [r["window"]], cells(r)))
    for r, windows, row_cells in merged:
        span = "-".join(dict.fromkeys([f"{windows[0] // 1024}k", f"{windows[-1] // 1024}k"]))
        lines.append("| " + " | ".join([r["client"], r["setting"], span, *row_cells]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(ROOT).parent / "shared" / "data")
    parser.add_argument("--windows", default="8192,16384,32768")
    parser.add_argument("--count", action="store_true", help="also before the tests' llama-server, counting")
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    todo = clients(args.data)
    configure_logging("error", sys.stderr)  # the fitting's warnings are what the table shows
    from tests.servers import ragproxy

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder, db = build_docs_index(Path(tmp))
        fake = stack.enter_context(stand_in())
        settings: list[tuple[str, str, str]] = [("fixed", "openai", fake)]
        if args.count:
            from tests.servers import llama_server

            server = stack.enter_context(
                llama_server("--jinja", "--chat-template-file", str(QWEN25), slots=1)
            )
            settings.append(("fixed+count", "openai", server.url))
        settings.append(("ollama", "ollama", fake))
        common = {"docs": (f"manuals={folder}",), "db": str(db)}
        for name, api, upstream in settings:
            for window in windows:
                chosen = {"context_window": window} if api == "openai" else {"num_ctx_max": window}
                with ragproxy(upstream=upstream, upstream_api=api, **common, **chosen) as url:
                    for client in todo:
                        rows.append(row(client, _slug(client.label), url, name, window))
    order = {name: i for i, name in enumerate(("fixed", "fixed+count", "ollama"))}
    rows.sort(key=lambda r: (r["client"], order[r["setting"]], r["window"]))
    print(table(rows))


if __name__ == "__main__":
    main()
