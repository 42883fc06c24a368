"""The Ollama API facade, with the official ``ollama`` client (sync and async, stream and not)
and raw HTTP, in both upstream modes: the Ollama-behaving server (``ollama``) and the real
llama.cpp server (``openai``)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import orjson
import pytest

from tests.conftest import CHAT_MODEL, UpstreamLog, ollama_client
from tests.ragdocs import CANARY, QUESTION
from tests.servers import Server, ragproxy

LLAMA_MODEL = "smollm2"


@pytest.fixture(scope="module")
def facade_ollama(ollama: Server, docs_index: tuple[Path, Path]) -> Iterator[str]:
    folder, db = docs_index
    with ragproxy(
        upstream=ollama.url, upstream_api="ollama", model=CHAT_MODEL, db=str(db), num_ctx_max=2048
    ) as url:
        yield url


@pytest.fixture(scope="module")
def facade_openai(llama: Server, docs_index: tuple[Path, Path]) -> Iterator[str]:
    _, db = docs_index
    with ragproxy(upstream=llama.url, upstream_api="openai", model=LLAMA_MODEL, db=str(db)) as url:
        yield url


@pytest.fixture(params=["ollama", "openai"])
def mode(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """(mode, proxy URL, chat model) for each upstream mode."""
    url = request.getfixturevalue(f"facade_{request.param}")
    return request.param, url, CHAT_MODEL if request.param == "ollama" else LLAMA_MODEL


def test_probes(mode: tuple[str, str, str]) -> None:
    _, url, _ = mode
    root = httpx.get(url + "/")
    assert root.status_code == 200 and root.text == "Ollama is running"
    assert httpx.head(url + "/").status_code == 200
    assert httpx.get(url + "/api/version").json()["version"].count(".") == 2
    assert "models" in httpx.get(url + "/api/ps").json()


def test_list_shows_models_and_aliases(mode: tuple[str, str, str]) -> None:
    _, url, model = mode
    names = [m.model for m in ollama_client(url).list().models]
    assert model in names and f"{model}+manuals" in names and f"{model}+norag" in names


def test_show_keeps_context_length_and_capabilities(mode: tuple[str, str, str]) -> None:
    name, url, model = mode
    shown = ollama_client(url).show(f"{model}+manuals")
    context = [v for k, v in (shown.modelinfo or {}).items() if k.endswith(".context_length")]
    assert context and context[0] > 0
    assert shown.capabilities and "completion" in shown.capabilities
    if name == "ollama":
        assert context == [8192] and "tools" in shown.capabilities  # as the upstream said


def test_chat_stream_and_not_carry_retrieval(mode: tuple[str, str, str], upstream_log: UpstreamLog) -> None:
    name, url, model = mode
    client = ollama_client(url)
    messages = [{"role": "user", "content": QUESTION}]
    parts = list(client.chat(model=model, messages=messages, stream=True, options={"num_predict": 6}))
    assert parts[-1].done and parts[-1].done_reason in ("stop", "length")
    assert parts[-1].prompt_eval_count and parts[-1].eval_count is not None
    text = "".join(p.message.content or "" for p in parts)
    assert "Sources:\n[1] valves/zephyr.md" in text  # Ollama clients get the footnote
    whole = client.chat(model=model, messages=messages, stream=False, options={"num_predict": 6})
    assert whole.done and "[1] valves/zephyr.md" in (whole.message.content or "")
    if name == "ollama":
        sent = upstream_log.requests("/api/chat")
        assert len(sent) == 2 and all(CANARY in s["body"]["messages"][0]["content"] for s in sent)
        assert all(s["body"]["options"]["num_ctx"] == 2048 for s in sent)


def test_chat_controls_and_housekeeping(mode: tuple[str, str, str], upstream_log: UpstreamLog) -> None:
    name, url, model = mode
    client = ollama_client(url)
    question = [{"role": "user", "content": QUESTION}]
    off = client.chat(model=f"{model}+norag", messages=question, options={"num_predict": 4})
    assert "Sources:" not in (off.message.content or "") and off.model == model
    header_off = ollama_client(url, headers={"X-RAG": "off"}).chat(
        model=model, messages=question, options={"num_predict": 4}
    )
    assert "Sources:" not in (header_off.message.content or "")
    title = [{"role": "user", "content": f"### Task:\nGenerate a concise title.\n<chat_history>{QUESTION}"}]
    task = client.chat(model=model, messages=title, options={"num_predict": 4})
    assert "Sources:" not in (task.message.content or "")
    if name == "ollama":
        assert all(CANARY not in str(s["body"]["messages"]) for s in upstream_log.requests("/api/chat"))


def test_generate_with_retrieval(mode: tuple[str, str, str], upstream_log: UpstreamLog) -> None:
    name, url, model = mode
    client = ollama_client(url)
    parts = list(client.generate(model=model, prompt=QUESTION, stream=True, options={"num_predict": 6}))
    assert parts[-1].done and "[1] valves/zephyr.md" in "".join(p.response for p in parts)
    whole = client.generate(model=model, prompt=QUESTION, options={"num_predict": 6})
    assert whole.done and "Sources:" in whole.response
    if name == "ollama":
        sent = upstream_log.requests("/api/generate")
        assert sent and CANARY in sent[0]["body"]["system"] and sent[0]["body"]["prompt"] == QUESTION


def test_async_client(mode: tuple[str, str, str]) -> None:
    _, url, model = mode

    async def run() -> tuple[str, str]:
        async with ollama.AsyncClient(host=url) as client:
            streamed = ""
            async for part in await client.chat(
                model=model,
                messages=[{"role": "user", "content": QUESTION}],
                stream=True,
                options={"num_predict": 4},
            ):
                streamed += part.message.content or ""
            whole = await client.chat(
                model=model, messages=[{"role": "user", "content": QUESTION}], options={"num_predict": 4}
            )
            return streamed, whole.message.content or ""

    streamed, whole = asyncio.run(run())
    assert "[1] valves/zephyr.md" in streamed and "[1] valves/zephyr.md" in whole


def test_embed_and_legacy_embeddings(mode: tuple[str, str, str]) -> None:
    name, url, model = mode
    client = ollama_client(url)
    upstream = client.embed(model=model, input=["one", "two"])
    assert len(upstream.embeddings) == 2 and len(upstream.embeddings[0]) > 0
    legacy = client.embeddings(model=model, prompt="one")
    assert legacy.embedding == pytest.approx(upstream.embeddings[0], rel=1e-4, abs=1e-4)
    local = client.embed(model="e5", input="大熊猫")
    assert len(local.embeddings[0]) == 384  # the index's own embedder


def test_unknown_model_gives_ollamas_error(mode: tuple[str, str, str]) -> None:
    _, url, _ = mode
    with pytest.raises(ollama.ResponseError) as raised:
        ollama_client(url).chat(model="nope:1b", messages=[{"role": "user", "content": "hi"}])
    assert (
        raised.value.status_code == 404
        and "nope:1b" in raised.value.error
        and "not found" in raised.value.error
    )


def test_ndjson_bytes(mode: tuple[str, str, str]) -> None:
    _, url, model = mode
    body = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "options": {"num_predict": 5},
    }
    with httpx.stream("POST", url + "/api/chat", json=body, timeout=60) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["x-ragproxy-sources"] == "1"
        raw = b"".join(response.iter_raw())
    assert raw.endswith(b"\n")
    lines = [orjson.loads(line) for line in raw.split(b"\n")[:-1]]
    assert all(line["model"] == model and line["created_at"].endswith("Z") for line in lines)
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    final = lines[-1]
    for key in (
        "done_reason",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "eval_count",
        "eval_duration",
    ):
        assert key in final, key
    one = httpx.post(url + "/api/chat", json={**body, "stream": False}, timeout=60)
    assert one.headers["content-type"].startswith("application/json") and one.json()["done"] is True


def test_errors_in_ollamas_shape(facade_ollama: str) -> None:
    bad = httpx.post(facade_ollama + "/api/chat", content=b"{not json", timeout=10)
    assert bad.status_code == 400 and set(bad.json()) == {"error"}
    missing = httpx.post(facade_ollama + "/api/chat", json={"messages": []}, timeout=10)
    assert missing.status_code == 400 and missing.json() == {"error": "model is required"}
    # mid-stream: the upstream's error arrives as one last line
    body = {
        "model": f"{CHAT_MODEL}@error-after=2",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    with httpx.stream("POST", facade_ollama + "/api/chat", json=body, timeout=60) as response:
        lines = [orjson.loads(line) for line in response.iter_lines() if line]
    assert "error" in lines[-1] and all("error" not in line for line in lines[:-1])


def test_tools_dropped_for_models_without_the_capability(
    facade_ollama: str, upstream_log: UpstreamLog
) -> None:
    tool = {"type": "function", "function": {"name": "web_search", "description": "search", "parameters": {}}}
    reply = httpx.post(
        facade_ollama + "/api/chat",
        json={
            "model": "smollm2-think:135m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [tool],
            "stream": False,
            "options": {"num_predict": 3},
        },
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    (sent,) = upstream_log.requests("/api/chat")
    assert "tools" not in sent["body"]
    upstream_log.clear()
    ollama_client(facade_ollama).chat(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "hi"}],
        tools=[tool],
        options={"num_predict": 3},
    )
    (sent,) = upstream_log.requests("/api/chat")
    assert sent["body"]["tools"][0]["function"]["name"] == "web_search"  # kept where supported


def test_load_and_unload_pass_straight_through(facade_ollama: str, upstream_log: UpstreamLog) -> None:
    unload = httpx.post(
        facade_ollama + "/api/generate", json={"model": CHAT_MODEL, "keep_alive": 0}, timeout=30
    )
    assert unload.status_code == 200
    lines = [orjson.loads(line) for line in unload.content.splitlines() if line]
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "unload"
    (sent,) = upstream_log.requests("/api/generate")
    assert sent["body"] == {"model": CHAT_MODEL, "keep_alive": 0, "stream": True}


def test_model_management_is_forwarded(
    facade_ollama: str, facade_openai: str, upstream_log: UpstreamLog
) -> None:
    client = ollama_client(facade_ollama)
    statuses = [p.status for p in client.pull(CHAT_MODEL, stream=True)]
    assert statuses[-1] == "success" and len(statuses) > 1
    assert upstream_log.requests("/api/pull")
    with pytest.raises(ollama.ResponseError) as raised:
        client.delete("nope:1b")
    assert raised.value.status_code == 404
    refused = httpx.post(facade_openai + "/api/pull", json={"model": LLAMA_MODEL}, timeout=10)
    assert refused.status_code == 501 and "OpenAI-compatible" in refused.json()["error"]


def test_load_request_with_an_openai_upstream(facade_openai: str) -> None:
    reply = httpx.post(
        facade_openai + "/api/generate", json={"model": LLAMA_MODEL, "stream": False}, timeout=30
    )
    assert reply.status_code == 200 and reply.json()["done_reason"] == "load"
    unload = httpx.post(facade_openai + "/api/chat", json={"model": LLAMA_MODEL, "keep_alive": 0}, timeout=30)
    lines = [orjson.loads(line) for line in unload.content.splitlines() if line]
    assert lines[-1]["done_reason"] == "unload" and lines[-1]["message"]["content"] == ""


@pytest.mark.parametrize(
    "path", ["/api/../v1/chat/completions", "/api/%2e%2e/v1/chat/completions", "/api/./../_test/requests"]
)
def test_a_dot_segment_never_takes_a_forwarded_request_past_api(
    proxy_ollama: str, upstream_log: UpstreamLog, path: str
) -> None:
    """The model-management forwarder relays any /api/ path: with dot segments, which the
    upstream resolves, it reached the upstream's other API past ragproxy's own checks."""
    host, port = proxy_ollama.removeprefix("http://").split(":")
    body = orjson.dumps({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 200})
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            head.encode() + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"only /api/ paths are forwarded" in answer
    assert [r["path"] for r in upstream_log.requests() if not r["path"].startswith("/api/")] == []
