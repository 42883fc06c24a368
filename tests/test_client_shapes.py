"""Real clients' requests, as they sent them (tests/data/clients/, captured by the end-to-end
scripts): before a model of DeepSeek-R1's trained context on Ollama, every client keeps all its
tools and gets its passage, with num_ctx grown to hold them and the answer's share; the small ones,
replayed with their own User-Agent to the tests' model, get the passage and show the sources in the
text the client prints (none on a turn of tool calls); a client's request for a chat title gets no
passages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.api import anthropic_wire, responses_wire
from proxy.pipeline.context import estimate, tools_tokens
from tests.conftest import CHAT_MODEL, UpstreamLog
from tests.ragdocs import CANARY
from tests.servers import Server, fake_ollama, ragproxy

CAPTURED = Path(__file__).parent / "data" / "clients"
CHAT_PATHS = ("/v1/chat/completions", "/api/chat")


def load(path: Path) -> dict[str, Any]:
    """A captured request: its method, path, headers and body (a file holding a body alone is an
    OpenAI chat body)."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if "body" not in data:
        return {"method": "POST", "path": "/v1/chat/completions", "headers": {}, "body": data}
    data["headers"] = {name.lower(): value for name, value in (data.get("headers") or {}).items()}
    data["path"] = data["path"].partition("?")[0]  # Claude Code's /v1/messages?beta=true
    return data


def as_chat(request: dict[str, Any]) -> dict[str, Any]:
    """The request's body as the OpenAI chat body ragproxy makes of it (its own translations of
    the Messages and Responses APIs), for /v1/rag/preview."""
    body = request["body"]
    if request["path"] == "/v1/messages":
        return anthropic_wire.to_chat(body, CHAT_MODEL)[0] | {"model": CHAT_MODEL}
    if request["path"] == "/v1/responses":
        return responses_wire.to_chat(body)[0] | {"model": CHAT_MODEL}
    messages = [{k: v for k, v in m.items() if k != "images"} for m in body["messages"]]  # Ollama's
    chat = {k: v for k, v in body.items() if k not in ("options", "images", "keep_alive", "think")}
    return chat | {"model": CHAT_MODEL, "messages": messages}


def captured(kind: str, paths: tuple[str, ...] = CHAT_PATHS) -> list[Path]:
    """The captured requests: ``kind`` "title" for title requests, "chat" for the others."""
    files = []
    for path in sorted(CAPTURED.glob("*-request.json")):
        if load(path)["path"] in paths and ("-title-" in path.name) == (kind == "title"):
            files.append(path)
    return files


ALL_PATHS = (*CHAT_PATHS, "/v1/messages", "/v1/responses")


def name(path: Path) -> str:
    return path.name.removesuffix("-request.json")


def replay(url: str, path: Path) -> tuple[dict[str, Any], httpx.Response]:
    """The captured request sent again to ``url`` (a short answer, from the tests' model)."""
    request = load(path)
    body = {**request["body"], "model": CHAT_MODEL, "stream": False}
    tokens = 80 if body.get("tools") else 8  # room for a whole tool call
    if request["path"] == "/api/chat":
        body["options"] = {**(body.get("options") or {}), "num_predict": tokens, "temperature": 0}
    else:
        body.pop("stream_options", None)
        body.update(max_tokens=tokens, temperature=0)
    agent = request["headers"].get("user-agent", "")
    reply = httpx.post(url + request["path"], json=body, headers={"user-agent": agent}, timeout=120)
    return request, reply


def shown(request: dict[str, Any], reply: httpx.Response) -> dict[str, Any]:
    """The answer's message, as the client reads it."""
    data = reply.json()
    message: dict[str, Any] = (
        data["message"] if request["path"] == "/api/chat" else data["choices"][0]["message"]
    )
    return message


def names(tools: Any) -> list[str]:
    return [tool["function"]["name"] for tool in tools or ()]


@pytest.fixture(scope="module")
def long_context(llama: Server, docs_index: tuple[Path, Path]) -> Iterator[str]:
    """ragproxy with its default settings before an Ollama whose models say 131,072 tokens."""
    folder, db = docs_index
    with (
        fake_ollama(llama.url, context_length=131072) as ollama,
        ragproxy(upstream=ollama.url, upstream_api="ollama", docs=(f"manuals={folder}",), db=str(db)) as url,
    ):
        yield url


@pytest.mark.parametrize("path", captured("chat", ALL_PATHS), ids=name)
def test_every_client_keeps_its_tools_and_gets_its_passage_in_a_grown_window(
    long_context: str, path: Path
) -> None:
    request = load(path)
    body = as_chat(request)
    agent = request["headers"].get("user-agent", "")
    reply = httpx.post(long_context + "/v1/rag/preview", json=body, headers={"user-agent": agent}, timeout=60)
    assert reply.status_code == 200, reply.text
    preview = reply.json()
    sent, tokens = preview["upstream"]["body"], preview["tokens"]
    assert names(sent.get("tools")) == names(body.get("tools"))
    assert preview["rag"]["sent"] == 1 and CANARY in json.dumps(sent["messages"])
    assert tokens["prompt_estimate"] + tokens["reserved_for_answer"] <= sent["options"]["num_ctx"] <= 32768


def small(body: dict[str, Any]) -> bool:
    """A request the tests' model answers in its 2,048-token slot, with the passage."""
    return estimate(body["messages"], tools_tokens(body)) < 1500


@pytest.mark.parametrize(
    "path",
    [p for p in captured("chat") if small(load(p)["body"])],
    ids=name,
)
def test_a_clients_question_gets_its_passage_its_tools_and_shows_its_sources(
    rag_proxy: str, upstream_log: UpstreamLog, path: Path
) -> None:
    request, reply = replay(rag_proxy, path)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-ragproxy-sources"] == "1"
    (sent,) = upstream_log.requests("/api/chat")
    assert CANARY in json.dumps(sent["body"]["messages"])
    assert names(sent["body"].get("tools")) == names(request["body"].get("tools"))
    message = shown(request, reply)
    if message.get("tool_calls"):  # the test server's tools model calls whatever it is offered
        assert "Sources:" not in (message.get("content") or "")
    else:
        assert "Sources:\n[1] valves/zephyr.md" in message["content"]


@pytest.mark.parametrize("path", captured("title", ALL_PATHS), ids=name)
def test_a_clients_title_request_gets_no_passages(rag_proxy: str, path: Path) -> None:
    request = load(path)
    agent = request["headers"].get("user-agent", "")
    reply = httpx.post(rag_proxy + "/v1/rag/preview", json=as_chat(request), headers={"user-agent": agent})
    assert reply.status_code == 200, reply.text
    assert reply.json()["rag"]["skipped"] == "title request" and reply.json()["sources"] == []
