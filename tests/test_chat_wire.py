"""The OpenAI chat wire, byte by byte, through ragproxy to real upstreams in both modes."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import UpstreamLog, sdk
from tests.servers import Server

PROMPT = [{"role": "user", "content": "Tell me about the history of lighthouses."}]


def sse_events(raw: bytes) -> list[bytes]:
    """Events of an SSE body, checking the framing on the way: ``data: ...`` then a blank line."""
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-200:]
    events = raw.split(b"\n\n")
    assert events[-1] == b""
    for event in events[:-1]:
        assert event.startswith(b"data: ") and b"\n" not in event, event
    return [event[len(b"data: ") :] for event in events[:-1]]


def stream_raw(base: str, body: dict[str, Any]) -> tuple[httpx.Response, list[dict[str, Any]]]:
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as response:
        raw = response.read()
    events = sse_events(raw)
    assert events[-1] == b"[DONE]"
    return response, [orjson.loads(e) for e in events[:-1]]


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_fields(proxy_any: str, include_usage: bool) -> None:
    body: dict[str, Any] = {"messages": PROMPT, "stream": True, "max_tokens": 12, "temperature": 0}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response, chunks = stream_raw(proxy_any, body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"]
    assert len({c["created"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    if include_usage:
        *chunks, usage_chunk = chunks
        assert usage_chunk["choices"] == []
        usage = usage_chunk["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert not any("usage" in c and c["usage"] for c in chunks)
    final = chunks[-1]["choices"][0]
    assert final["delta"] == {} and final["finish_reason"] == "length"  # 12 tokens cannot finish the list
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.strip()


def test_stream_matches_upstream_byte_for_byte(proxy_openai: str, llama: Server) -> None:
    """At temperature 0 llama.cpp is deterministic: the text through the proxy is the text direct."""
    body = {"messages": PROMPT, "stream": True, "max_tokens": 40, "temperature": 0, "model": "smollm2"}
    _, direct = stream_raw(llama.url, body)
    client = sdk(proxy_openai)
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(**body) if c.choices]
    direct_pieces = [c["choices"][0]["delta"].get("content") or "" for c in direct if c["choices"]]
    assert "".join(pieces) == "".join(direct_pieces)
    assert [p for p in pieces if p] == [p for p in direct_pieces if p]  # not re-chunked either


def test_ollama_mode_text_matches_llama(proxy_ollama: str, llama: Server) -> None:
    body = {"messages": PROMPT, "max_tokens": 30, "temperature": 0}
    direct = httpx.post(llama.url + "/v1/chat/completions", json=body, timeout=60).json()
    client = sdk(proxy_ollama)
    reply = client.chat.completions.create(model="smollm2:135m", **body)
    assert reply.choices[0].message.content == direct["choices"][0]["message"]["content"]


def test_non_stream_shape(proxy_any: str) -> None:
    response = httpx.post(
        proxy_any + "/v1/chat/completions",
        json={"messages": PROMPT, "max_tokens": 8, "temperature": 0},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["object"] == "chat.completion" and data["id"] and isinstance(data["created"], int)
    choice = data["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    usage = data["usage"]
    assert usage["completion_tokens"] == 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + 8 and usage["prompt_tokens"] > 0


def test_openai_sdk_sync_and_async(proxy_any: str) -> None:
    import anyio

    client = sdk(proxy_any)
    sync_text = (
        client.chat.completions.create(messages=PROMPT, model="default", max_tokens=10, temperature=0)
        .choices[0]
        .message.content
    )

    async def run() -> tuple[str, str]:
        aclient = openai.AsyncOpenAI(base_url=proxy_any + "/v1", api_key="unused")  # closed below
        whole = await aclient.chat.completions.create(
            messages=PROMPT, model="default", max_tokens=10, temperature=0
        )
        parts = []
        async for chunk in await aclient.chat.completions.create(
            messages=PROMPT, model="default", max_tokens=10, temperature=0, stream=True
        ):
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
        await aclient.close()
        return whole.choices[0].message.content or "", "".join(parts)

    async_text, streamed = anyio.run(run)
    assert sync_text and sync_text == async_text == streamed


def test_stop_and_seed_reach_llama(proxy_openai: str, llama: Server) -> None:
    client = sdk(proxy_openai)
    free = client.chat.completions.create(model="default", messages=PROMPT, max_tokens=30, temperature=0)
    text = free.choices[0].message.content or ""
    word = text.split()[2]
    stopped = client.chat.completions.create(
        model="default", messages=PROMPT, max_tokens=30, temperature=0, stop=[word]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert word not in (stopped.choices[0].message.content or "")
    seeded = [
        client.chat.completions.create(
            model="default", messages=PROMPT, max_tokens=20, temperature=1.5, seed=s, top_p=0.95
        )
        .choices[0]
        .message.content
        for s in (7, 7, 8)
    ]
    assert seeded[0] == seeded[1] != seeded[2]


FIELDS = {
    "temperature": 0.2,
    "top_p": 0.9,
    "seed": 11,
    "stop": ["\n\n"],
    "max_tokens": 5,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.2,
    "user": "u1",
    "logit_bias": {"50": -1},
    "response_format": {"type": "text"},
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "description": "Current time",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ],
    "some_future_field": {"kept": [1, 2]},
}


def test_openai_mode_forwards_every_field_intact(
    make_proxy: Any, ollama: Server, upstream_log: UpstreamLog
) -> None:
    # The Ollama-behaving server also serves /v1 (as Ollama does) and records what it received.
    with make_proxy(upstream=ollama.url, upstream_api="openai", model="smollm2:135m") as base:
        body = {"model": "smollm2:135m", "messages": PROMPT, **FIELDS}
        response = httpx.post(base + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    (sent,) = upstream_log.requests("/v1/chat/completions")
    received = sent["body"]
    assert received.pop("stream") is True and received.pop("stream_options") == {"include_usage": True}
    assert received == body


def test_ollama_mode_maps_fields_to_options(proxy_ollama: str, upstream_log: UpstreamLog) -> None:
    body = {
        "messages": PROMPT,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 11,
        "stop": "\n\n",
        "max_tokens": 5,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "response_format": {"type": "json_object"},
        "options": {"num_ctx": 4096},
        "keep_alive": "10m",
        "user": "dropped",
    }
    response = httpx.post(proxy_ollama + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    (sent,) = upstream_log.requests("/api/chat")
    assert sent["body"] == {
        "model": "smollm2:135m",
        "messages": PROMPT,
        "stream": True,
        "format": "json",
        "keep_alive": "10m",
        "options": {
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 11,
            "stop": ["\n\n"],
            "num_predict": 5,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "num_ctx": 4096,
        },
    }


def test_tool_calls_come_back_intact(proxy_any: str) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    # The tiny model needs a push to begin "<tool_call>" (token 44) and to stop after one call.
    request: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": tools,
        "tool_choice": "required",
        "max_tokens": 60,
        "temperature": 0,
        "logit_bias": {"44": 5},
        "stop": ["</tool_call>"],
    }
    client = sdk(proxy_any)
    choice = client.chat.completions.create(**request).choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in orjson.loads(call.function.arguments)
    streamed = client.chat.completions.create(**request, stream=True)
    names, arguments, finish = "", "", None
    for chunk in streamed:
        for delta_call in chunk.choices[0].delta.tool_calls or ():
            names += delta_call.function.name or ""
            arguments += delta_call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert names == "get_weather" and finish == "tool_calls"
    assert orjson.loads(arguments) == orjson.loads(call.function.arguments)
