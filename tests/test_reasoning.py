"""DeepSeek-R1-style reasoning, generated for real (a grammar holds the small model to the
``<think>…</think>`` shape), delivered in each --reasoning-format, from each upstream form."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import UpstreamLog
from tests.fake_ollama import THINK_GRAMMAR
from tests.servers import Server
from tests.test_chat_wire import sse_events

QUESTION = [{"role": "user", "content": "Why is the sea salty?"}]


def collect(base: str, body: dict[str, Any]) -> dict[str, str]:
    """Concatenated delta fields of a streamed reply."""
    with httpx.stream("POST", base + "/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200, r.read()
        events = sse_events(r.read())
    out: dict[str, str] = {}
    for event in events[:-1]:
        for choice in orjson.loads(event)["choices"]:
            for key, value in choice["delta"].items():
                if isinstance(value, str) and key != "role":
                    out[key] = out.get(key, "") + value
    return out


def ollama_direct(ollama: Server, model: str) -> tuple[str, str]:
    """(thinking, content) as the Ollama-behaving server gives them, non-streamed."""
    reply = httpx.post(
        ollama.url + "/api/chat",
        timeout=60,
        json={
            "model": model,
            "messages": QUESTION,
            "stream": False,
            "options": {"temperature": 0, "num_predict": 120},
        },
    )
    message = reply.json()["message"]
    return message.get("thinking", ""), message["content"]


@pytest.fixture(scope="module")
def expected(ollama: Server) -> tuple[str, str]:
    thinking, content = ollama_direct(ollama, "smollm2-think:135m")
    assert thinking and content  # the grammar produced both parts
    return thinking, content


BODY = {"messages": QUESTION, "temperature": 0, "max_tokens": 120}


@pytest.mark.parametrize("model", ["smollm2-think:135m", "smollm2-r1-legacy:135m"])
@pytest.mark.parametrize("mode", ["reasoning_content", "reasoning", "inline", "drop"])
def test_ollama_modes(
    make_proxy: Any, ollama: Server, expected: tuple[str, str], model: str, mode: str
) -> None:
    thinking, content = expected
    with make_proxy(upstream=ollama.url, reasoning_format=mode) as base:
        got = collect(base, {**BODY, "model": model})
        whole = httpx.post(base + "/v1/chat/completions", json={**BODY, "model": model}, timeout=60).json()
    message = whole["choices"][0]["message"]
    if mode in ("reasoning_content", "reasoning"):
        assert got[mode].strip() == thinking.strip() and got["content"] == content
        assert set(got) == {mode, "content"}
        assert message[mode].strip() == thinking.strip() and message["content"] == content
    elif mode == "drop":
        assert got == {"content": content}
        assert message["content"] == content and not {"reasoning", "reasoning_content"} & set(message)
    elif model == "smollm2-r1-legacy:135m":  # inline in, inline out: untouched
        assert got == {"content": f"<think>\n{thinking}\n</think>\n\n{content}"}
    else:
        assert got == {"content": f"<think>{thinking}</think>\n\n{content}"}


def test_openai_mode_inline_think_from_llama(proxy_openai: str, llama: Server) -> None:
    body = {**BODY, "grammar": THINK_GRAMMAR}  # an extension field: it must reach llama.cpp intact
    direct = httpx.post(llama.url + "/v1/chat/completions", json=body, timeout=60).json()
    text = direct["choices"][0]["message"]["content"]
    assert text.startswith("<think>\n") and "\n</think>\n\n" in text
    thinking, content = text[len("<think>\n") :].split("\n</think>\n\n", 1)
    got = collect(proxy_openai, body)
    assert got["reasoning_content"].strip() == thinking and got["content"] == content


def test_openai_mode_reasoning_field_is_normalised(
    make_proxy: Any, ollama: Server, expected: tuple[str, str]
) -> None:
    # Ollama's /v1 sends reasoning as delta.reasoning; clients get reasoning_content by default.
    with make_proxy(upstream=ollama.url, upstream_api="openai") as base:
        got = collect(base, {**BODY, "model": "smollm2-think:135m"})
    assert got == {"reasoning_content": expected[0], "content": expected[1]}


HISTORY = [
    {"role": "user", "content": "Hi"},
    {
        "role": "assistant",
        "content": "<think>\nprivate chain of thought\n</think>\n\nHello!",
        "reasoning_content": "private chain of thought",
    },
    {"role": "user", "content": "And now?"},
]


@pytest.mark.parametrize(("api", "path"), [("ollama", "/api/chat"), ("openai", "/v1/chat/completions")])
def test_history_reasoning_is_stripped(
    make_proxy: Any, ollama: Server, upstream_log: UpstreamLog, api: str, path: str
) -> None:
    with make_proxy(upstream=ollama.url, upstream_api=api, model="smollm2:135m") as base:
        response = httpx.post(
            base + "/v1/chat/completions", json={"messages": HISTORY, "max_tokens": 3}, timeout=60
        )
    assert response.status_code == 200, response.text
    (sent,) = upstream_log.requests(path)
    assert sent["body"]["messages"][1] == {"role": "assistant", "content": "Hello!"}
    assert "private chain of thought" not in orjson.dumps(sent["body"]).decode()
