"""What ragproxy forwards is checked first: a malformed tool, image or completion field is a 400
in the wire's own error shape, naming the field, and the upstream is never asked."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.servers import ragproxy
from tests.stub_upstream import StubUpstream
from tests.test_chat_wire import PROMPT
from tests.test_failures import assert_error

FUNCTION = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CHAT = {"model": "tiny", "messages": PROMPT, "max_tokens": 3}
COMPLETION = {"model": "tiny", "prompt": "def f(", "max_tokens": 3}
RESPONSES = {"model": "tiny", "input": "hi"}
MESSAGES = {"model": "tiny", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
OLLAMA_CHAT = {"model": "tiny", "messages": PROMPT}


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[StubUpstream, str]]:
    with StubUpstream() as upstream, ragproxy(upstream=upstream.url, upstream_api="openai") as base:
        yield upstream, base


def _image(url: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]


def _called(call: Any, tool_call_id: Any = "c1", content: str | None = None) -> list[dict[str, Any]]:
    """A history in which the assistant made ``call`` and the tool answered."""
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": content, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": tool_call_id, "content": "sunny"},
    ]


CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
PNG = "iVBORw0KGgo="

OPENAI_CASES = [
    ("/v1/chat/completions", {**CHAT, "tools": [1]}, "tools[0]"),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, "tools[0].function"),
    ("/v1/chat/completions", {**CHAT, "tools": [{**FUNCTION, "type": "tool"}]}, "tools[0].type"),
    (
        "/v1/chat/completions",
        {**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
        "tools[0].function.parameters",
    ),
    ("/v1/chat/completions", {**CHAT, "tools": [FUNCTION], "tool_choice": 5}, "tool_choice"),
    ("/v1/chat/completions", {**CHAT, "tool_choice": {"type": "function"}}, "tool_choice"),
    ("/v1/chat/completions", {**CHAT, "messages": _image(5)}, "messages[0].content[0].image_url.url"),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]},
        "messages[0].content[0].text",
    ),
    ("/v1/chat/completions", {**CHAT, "temperature": "hot"}, "temperature"),
    ("/v1/chat/completions", {**CHAT, "logprobs": "yes"}, "logprobs"),
    ("/v1/completions", {**COMPLETION, "prompt": [{}]}, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": []}, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": ["a", 1]}, "prompt"),
    ("/v1/completions", {**COMPLETION, "suffix": 3}, "suffix"),
    ("/v1/completions", {**COMPLETION, "stop": [1]}, "stop"),
    ("/v1/completions", {**COMPLETION, "temperature": "hot"}, "temperature"),
    ("/v1/completions", {**COMPLETION, "max_tokens": 1.5}, "max_tokens"),
    ("/v1/completions", {**COMPLETION, "echo": "yes"}, "echo"),
    ("/v1/completions", {**COMPLETION, "prompt": ["a"] * 2049}, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": list(range(300_001))}, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": [[1] * 150_000, [2] * 150_001]}, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": ["word " * 400_000]}, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": [[1, 2], "a"]}, "prompt"),
    ("/v1/completions", {**COMPLETION, "max_tokens": -2}, "max_tokens"),
    ("/v1/completions", {**COMPLETION, "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {**COMPLETION, "n": 0}, "n"),
    ("/v1/completions", {**COMPLETION, "n": 129}, "n"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": -5}, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 0}, "max_completion_tokens"),
    ("/v1/chat/completions", {**CHAT, "n": 1000}, "n"),
    ("/v1/responses", {**RESPONSES, "max_output_tokens": -1}, "max_output_tokens"),
    ("/v1/responses", {**RESPONSES, "max_output_tokens": 10**12}, "max_output_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 2**31}, "max_tokens"),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": _called({**CALL, "id": 1})},
        "messages[1].tool_calls[0].id",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": _called({**CALL, "type": "custom"})},
        "messages[1].tool_calls[0].type",
    ),
    ("/v1/chat/completions", {**CHAT, "messages": _called(CALL, tool_call_id=1)}, "messages[2].tool_call_id"),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": _called({**CALL, "function": "f"})},
        "messages[1].tool_calls[0].function",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": _called({**CALL, "function": {"name": 5, "arguments": "{}"}})},
        "messages[1].tool_calls[0].function.name",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": _called({**CALL, "function": {"name": "f", "arguments": 5}})},
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": _called({**CALL, "function": {"name": "f", "arguments": "{nope"}})},
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [PROMPT[0], {"role": "assistant", "content": "", "tool_calls": {"id": "c1"}}]},
        "messages[1].tool_calls",
    ),
    (
        "/v1/chat/completions",
        {
            **CHAT,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": f"data:image/png;base64,{PNG}"}],
                }
            ],
        },
        "messages[0].content[0].image_url",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": _image("data:image/png;base64,!!!")},
        "messages[0].content[0].image_url.url",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": _image("data:image/png,abc")},
        "messages[0].content[0].image_url.url",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": _image("file:///etc/passwd")},
        "messages[0].content[0].image_url.url",
    ),
    (
        "/v1/responses",
        {
            **RESPONSES,
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "data:image/png;base64,!!!"}],
                }
            ],
        },
        "input[0].content[0].image_url",
    ),
    ("/v1/responses", {**RESPONSES, "tools": [1]}, "tools[0]"),
    (
        "/v1/responses",
        {**RESPONSES, "tools": [{"type": "custom", "name": "f", "description": 5}]},
        "tools[0].description",
    ),
    (
        "/v1/responses",
        {**RESPONSES, "tools": [{"type": "function", "name": "f", "parameters": "x"}]},
        "tools[0].parameters",
    ),
]


@pytest.mark.parametrize(("path", "body", "param"), OPENAI_CASES)
def test_openai_wires_name_the_bad_field(
    stub: tuple[StubUpstream, str], path: str, body: Any, param: str
) -> None:
    upstream, base = stub
    asked = len(upstream.paths)
    assert_error(httpx.post(base + path, json=body, timeout=30), 400, "invalid_request_error", param=param)
    assert upstream.paths[asked:] == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({**MESSAGES, "tools": [1]}, "tools.0"),
        ({**MESSAGES, "tools": [{"name": "f", "input_schema": "x"}]}, "tools.0.input_schema"),
        (
            {
                **MESSAGES,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": "!!!"},
                            }
                        ],
                    }
                ],
            },
            "messages.0.content.0.source.data",
        ),
    ],
)
def test_anthropic_wire_names_the_bad_field(stub: tuple[StubUpstream, str], body: Any, named: str) -> None:
    upstream, base = stub
    asked = len(upstream.paths)
    reply = httpx.post(base + "/v1/messages", json=body, timeout=30)
    assert reply.status_code == 400, reply.text
    error = reply.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert named in error["error"]["message"]
    assert upstream.paths[asked:] == []


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/api/chat", {**OLLAMA_CHAT, "tools": [1]}, "tools[0]"),
        (
            "/api/chat",
            {**OLLAMA_CHAT, "tools": [{"type": "function", "function": {}}]},
            "tools[0].function.name",
        ),
        ("/api/chat", {**OLLAMA_CHAT, "messages": [{**PROMPT[0], "images": ["not base64!"]}]}, "images"),
        ("/api/generate", {"model": "tiny", "prompt": "hi", "images": [1]}, "images"),
        ("/api/generate", {"model": "tiny", "prompt": "hi", "images": ["%%%"]}, "images"),
        ("/api/chat", {**OLLAMA_CHAT, "options": {"num_predict": "all"}}, "num_predict"),
        (
            "/api/chat",
            {
                **OLLAMA_CHAT,
                "messages": _called({"id": 1, "function": {"name": "f", "arguments": {}}}, content=""),
            },
            "tool_calls",
        ),
        (
            "/api/chat",
            {**OLLAMA_CHAT, "messages": _called({"function": {"name": "f", "arguments": "{}"}}, content="")},
            "tool_calls",
        ),
        ("/api/generate", {"model": "tiny", "prompt": "hi", "options": {"num_predict": 1.5}}, "num_predict"),
    ],
)
def test_ollama_wire_names_the_bad_field(
    stub: tuple[StubUpstream, str], path: str, body: Any, named: str
) -> None:
    upstream, base = stub
    asked = len(upstream.paths)
    reply = httpx.post(base + path, json=body, timeout=30)
    assert reply.status_code == 400, reply.text
    assert set(reply.json()) == {"error"} and named in reply.json()["error"]
    assert upstream.paths[asked:] == []


def test_well_formed_fields_still_go_through(stub: tuple[StubUpstream, str]) -> None:
    _, base = stub
    good = [
        ("/v1/chat/completions", {**CHAT, "tools": [FUNCTION], "tool_choice": "auto"}),
        (
            "/v1/chat/completions",
            {**CHAT, "tools": [FUNCTION], "tool_choice": {**FUNCTION, "function": {"name": "f"}}},
        ),
        ("/v1/chat/completions", {**CHAT, "messages": _image("data:image/png;base64,iVBORw0KGgo=")}),
        ("/v1/completions", {**COMPLETION, "prompt": [[1, 2, 3]], "stop": ["\n"], "temperature": 0}),
        ("/v1/completions", {**COMPLETION, "prompt": ["a"] * 2048, "n": 2}),
        ("/v1/completions", {**COMPLETION, "prompt": list(range(1000))}),
        ("/api/chat", {**OLLAMA_CHAT, "stream": False, "tools": [FUNCTION]}),
        ("/v1/chat/completions", {**CHAT, "messages": _image("https://example.com/cat.png")}),
        (
            "/api/chat",
            {
                **OLLAMA_CHAT,
                "stream": False,
                "messages": _called({"function": {"name": "f", "arguments": {"a": 1}}}, content=""),
            },
        ),
        (
            "/v1/chat/completions",
            {**CHAT, "messages": _called({**CALL, "function": {"name": "f", "arguments": {}}})},
        ),
        (
            "/v1/messages",
            {
                **MESSAGES,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                            }
                        ],
                    }
                ],
            },
        ),
    ]
    for path, body in good:
        reply = httpx.post(base + path, json=body, timeout=30)
        assert reply.status_code == 200, (path, reply.text)


def test_ollama_lengths_keep_their_meaning(stub: tuple[StubUpstream, str]) -> None:
    """Ollama's ``num_predict`` of -1 (no limit) and -2 (fill the window) are its own: to an
    OpenAI-compatible upstream they mean no ``max_tokens``, never a negative one."""
    upstream, base = stub
    for predict, sent in ((-1, None), (-2, None), (0, None), (5, 5)):
        body = {**OLLAMA_CHAT, "stream": False, "options": {"num_predict": predict}}
        reply = httpx.post(base + "/api/chat", json=body, timeout=30)
        assert reply.status_code == 200, reply.text
        assert upstream.bodies[-1].get("max_tokens") == sent


def test_no_limit_as_llama_cpp_writes_it_is_taken(stub: tuple[StubUpstream, str]) -> None:
    """``max_tokens: -1`` is llama.cpp's and LM Studio's "no limit", which some clients send: it
    goes upstream as no ``max_tokens`` at all; an image's base64 may hold MIME line breaks."""
    upstream, base = stub
    for path, body in (("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)):
        reply = httpx.post(base + path, json={**body, "max_tokens": -1}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert "max_tokens" not in upstream.bodies[-1]
    pixel = base64.encodebytes(b"\x89PNG\r\n\x1a\n" + bytes(60)).decode()  # with a line break
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is it?"}, image]}]
    reply = httpx.post(base + "/v1/chat/completions", json={**CHAT, "messages": messages}, timeout=30)
    assert reply.status_code == 200, reply.text


def test_a_call_without_type_or_arguments_is_taken_as_a_function(stub: tuple[StubUpstream, str]) -> None:
    """A call replayed without ``type`` (Ollama's calls have none), or with blank arguments, goes
    upstream as a function's call with ``{}``."""
    upstream, base = stub
    call = {"id": "c1", "function": {"name": "get_weather", "arguments": " "}}
    reply = httpx.post(base + "/v1/chat/completions", json={**CHAT, "messages": _called(call)}, timeout=30)
    assert reply.status_code == 200, reply.text
    sent = upstream.bodies[-1]["messages"][1]["tool_calls"][0]
    assert sent["type"] == "function" and sent["function"]["arguments"] == "{}"


def test_a_replayed_call_without_type_reaches_llama_cpp(proxy_openai: str) -> None:
    """llama.cpp's server fails with 500 on a call without ``type`` or with blank arguments: they
    reach it filled in."""
    call = {"id": "c1", "function": {"name": "get_weather", "arguments": ""}}
    body = {"model": "smollm2", "messages": _called(call), "max_tokens": 2}
    reply = httpx.post(proxy_openai + "/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
