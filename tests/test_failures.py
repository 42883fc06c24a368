"""Every error path: the status, OpenAI's error body, and streams that end cleanly."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import sdk
from tests.servers import Server, free_port
from tests.test_chat_wire import PROMPT, sse_events


def assert_error(
    response: httpx.Response, status: int, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == type_
    assert error["code"] == code
    assert error["param"] == param
    return error  # type: ignore[no-any-return]


def chat(base: str, body: Any, **kwargs: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(base + "/v1/chat/completions", content=body, timeout=60, **kwargs)
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=60, **kwargs)


def test_bad_json(proxy_any: str) -> None:
    error = assert_error(chat(proxy_any, b'{"messages": [}'), 400, "invalid_request_error")
    assert "not valid JSON" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": PROMPT, "stream": "yes"}, "stream"),
        ({"messages": PROMPT, "max_tokens": "ten"}, "max_tokens"),
        ({"messages": PROMPT, "stop": [1]}, "stop"),
        ({"messages": PROMPT, "model": 7}, "model"),
    ],
)
def test_schema_errors_name_the_field(proxy_any: str, body: dict[str, Any], param: str) -> None:
    assert_error(chat(proxy_any, body), 400, "invalid_request_error", param=param)


def test_body_must_be_an_object(proxy_any: str) -> None:
    assert_error(chat(proxy_any, b"[1, 2]"), 400, "invalid_request_error")


def test_unknown_model_is_404(proxy_ollama: str) -> None:
    for stream in (False, True):
        error = assert_error(
            chat(proxy_ollama, {"model": "nope:1b", "messages": PROMPT, "stream": stream}),
            404,
            "not_found_error",
            code="model_not_found",
        )
        assert "nope:1b" in error["message"]
    client = sdk(proxy_ollama, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope:1b", messages=PROMPT)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


HI = b'{"role": "user", "content": "hi"}'


def deep_bodies(depth: int) -> list[tuple[str, bytes]]:
    """(path, body) pairs, each nesting ``depth`` levels where its API lets a client put JSON."""
    chat_body = b'{"messages": [' + HI + b'], "max_tokens": 2, "metadata": ' + nested(depth) + b"}"
    return [
        ("/v1/chat/completions", chat_body),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "hi", "x": ' + nested(depth) + b"}]}",
        ),
        ("/v1/rag/preview", chat_body),
        ("/v1/embeddings", b'{"model": "smollm2", "input": "hi", "x": ' + nested(depth) + b"}"),
        (
            "/api/chat",
            b'{"model": "smollm2:135m", "messages": [' + HI + b'], "format": ' + nested(depth) + b"}",
        ),
        (
            "/api/generate",
            b'{"model": "smollm2:135m", "prompt": "hi", "options": {"stop": ' + nested(depth) + b"}}",
        ),
    ]


@pytest.mark.parametrize("depth", [300, 500, 2000])
def test_deeply_nested_json_is_400_in_the_apis_shape(proxy_any: str, depth: int) -> None:
    expected = "depth limit exceeded" if depth > 1024 else "nested deeper than 100 levels"
    for path, body in deep_bodies(depth):
        response = httpx.post(proxy_any + path, content=body, timeout=60)
        if path.startswith("/api/"):
            assert response.status_code == 400, (path, response.text)
            assert set(response.json()) == {"error"}
            message = response.json()["error"]
        else:
            message = assert_error(response, 400, "invalid_request_error")["message"]
        assert expected in message, (path, message)


def test_tool_call_arguments_nested_too_deep_are_400(proxy_ollama: str) -> None:
    """The arguments of an earlier tool call are a JSON string, parsed when the chat is checked."""
    arguments = orjson.dumps(nested(300).decode())
    body = (
        b'{"messages": [' + HI + b', {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", '
        b'"type": "function", "function": {"name": "f", "arguments": ' + arguments + b"}}]}, "
        b'{"role": "tool", "tool_call_id": "c1", "content": "ok"}, ' + HI + b"]}"
    )
    where = "messages[1].tool_calls[0].function.arguments"
    error = assert_error(chat(proxy_ollama, body), 400, "invalid_request_error", param=where)
    assert error["message"] == f"'{where}' is nested deeper than 100 levels"


def test_nesting_up_to_the_limit_is_served(proxy_any: str) -> None:
    body = b'{"messages": [' + HI + b'], "metadata": ' + nested(99) + b"}"  # 100 levels with the body
    assert httpx.post(proxy_any + "/v1/rag/preview", content=body, timeout=60).status_code == 200


def test_body_too_large_is_413(make_proxy: Any, ollama: Server) -> None:
    with make_proxy(upstream=ollama.url, max_body_size=1000) as base:
        big = {"messages": [{"role": "user", "content": "x" * 2000}]}
        assert_error(chat(base, big), 413, "invalid_request_error", code="request_too_large")
        # Without a content-length (chunked upload) the limit holds on the bytes actually read.
        chunks = iter([orjson.dumps(big)[i : i + 100] for i in range(0, 2100, 100)])
        response = httpx.post(base + "/v1/chat/completions", content=chunks, timeout=30)
        assert_error(response, 413, "invalid_request_error", code="request_too_large")


def test_unknown_route_and_method(proxy_any: str) -> None:
    assert_error(httpx.get(proxy_any + "/v1/nothing-here"), 404, "not_found_error")
    assert_error(httpx.get(proxy_any + "/v1/chat/completions"), 405, "invalid_request_error")


def test_upstream_down_is_502(make_proxy: Any) -> None:
    for api in ("ollama", "openai"):
        with make_proxy(upstream=f"http://127.0.0.1:{free_port()}", upstream_api=api) as base:
            for stream in (False, True):
                assert_error(
                    chat(base, {"messages": PROMPT, "stream": stream}),
                    502,
                    "api_error",
                    code="upstream_unreachable",
                )
            assert_error(httpx.get(base + "/v1/models"), 502, "api_error", code="upstream_unreachable")
            ready = httpx.get(base + "/readyz")
            assert ready.status_code == 503 and ready.json()["error"]["code"] == "upstream_unreachable"


def test_upstream_busy_is_503(proxy_ollama: str) -> None:
    assert_error(
        chat(proxy_ollama, {"model": "smollm2:135m@status=503", "messages": PROMPT}),
        503,
        "api_error",
        code="upstream_overloaded",
    )


def test_upstream_bad_request_is_400(proxy_openai: str) -> None:
    # llama.cpp itself refuses this (a message with no content); its message reaches the client.
    error = assert_error(
        chat(proxy_openai, {"messages": [{"role": "assistant"}]}), 400, "invalid_request_error"
    )
    assert error["message"]


def test_slow_first_byte_within_limit_succeeds(make_proxy: Any, ollama: Server) -> None:
    with make_proxy(upstream=ollama.url, first_byte_timeout=4, idle_timeout=1) as base:
        for stream in (False, True):
            response = chat(
                base, {"model": "smollm2:135m@delay=2", "messages": PROMPT, "max_tokens": 5, "stream": stream}
            )
            assert response.status_code == 200, response.text


def test_first_byte_timeout_is_504(make_proxy: Any, ollama: Server) -> None:
    with make_proxy(upstream=ollama.url, first_byte_timeout=1) as base:
        for stream in (False, True):
            assert_error(
                chat(base, {"model": "smollm2:135m@delay=3", "messages": PROMPT, "stream": stream}),
                504,
                "api_error",
                code="upstream_timeout",
            )


def stream_error(base: str, model: str) -> tuple[str, dict[str, Any]]:
    """Streams until the proxy reports an upstream failure; returns the text before it and the error."""
    with httpx.stream(
        "POST",
        base + "/v1/chat/completions",
        timeout=30,
        json={"model": model, "messages": PROMPT, "stream": True, "max_tokens": 30},
    ) as response:
        assert response.status_code == 200
        events = sse_events(response.read())
    *chunks, error_event, done = events
    assert done == b"[DONE]"
    text = "".join(orjson.loads(c)["choices"][0]["delta"].get("content") or "" for c in chunks)
    error = orjson.loads(error_event)
    assert set(error) == {"error"} and set(error["error"]) == {"message", "type", "param", "code"}
    return text, error["error"]


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_upstream_dying_mid_stream_ends_with_error_and_done(
    make_proxy: Any, ollama: Server, api: str
) -> None:
    with make_proxy(upstream=ollama.url, upstream_api=api) as base:
        text, error = stream_error(base, "smollm2:135m@die-after=3")
    assert text  # what arrived before the failure was delivered
    assert error["code"] == "upstream_error" and "closed the connection" in error["message"]


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_upstream_error_line_mid_stream(make_proxy: Any, ollama: Server, api: str) -> None:
    with make_proxy(upstream=ollama.url, upstream_api=api) as base:
        text, error = stream_error(base, "smollm2:135m@error-after=2")
    assert text and error["code"] == "upstream_error"
    assert "error was encountered while running the model" in error["message"]


def test_idle_gap_mid_stream_times_out(make_proxy: Any, ollama: Server) -> None:
    with make_proxy(upstream=ollama.url, idle_timeout=1) as base:
        text, error = stream_error(base, "smollm2:135m@hang-after=3")
    assert text and error["code"] == "upstream_timeout"


def test_sdk_raises_on_mid_stream_error(proxy_ollama: str) -> None:
    client = sdk(proxy_ollama, max_retries=0)
    stream = client.chat.completions.create(model="smollm2:135m@die-after=2", messages=PROMPT, stream=True)
    with pytest.raises(openai.APIError, match="closed the connection"):
        for _ in stream:
            pass


def test_request_body_cannot_redirect_upstream(proxy_ollama: str, upstream_log: Any) -> None:
    trap = f"http://127.0.0.1:{free_port()}"
    body = {
        "messages": PROMPT,
        "max_tokens": 3,
        "api_base": trap,
        "base_url": trap,
        "upstream": trap,
        "url": trap,
        "host": "evil.example",
    }
    response = chat(
        proxy_ollama, body, headers={"X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example"}
    )
    assert response.status_code == 200, response.text
    (sent,) = upstream_log.requests("/api/chat")
    assert sent["headers"]["host"].startswith("127.0.0.1:")
    assert not set(body) - {"messages", "max_tokens"} & set(sent["body"])
