"""Stream framing and reasoning splitting, fed the way networks deliver bytes: cut anywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from proxy.upstream.frames import ndjson_lines, sse_data
from proxy.upstream.reasoning import (
    ReasoningRenderer,
    ThinkSplitter,
    strip_reasoning,
    strip_reasoning_from_history,
)


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _collect(gen: AsyncIterator[bytes]) -> list[bytes]:
    async def run() -> list[bytes]:
        return [item async for item in gen]

    return anyio.run(run)


SSE = (
    b': ping\n\ndata: {"a": 1}\n\nevent: x\r\ndata: {"b":\r\ndata: 2}\r\n\r\n'
    b'data:{"c": 3}\r\rdata: [DONE]\n\n'
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_sse_events_survive_any_split(size: int) -> None:
    assert _collect(sse_data(_pieces(SSE, size))) == [b'{"a": 1}', b'{"b":\n2}', b'{"c": 3}', b"[DONE]"]


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_ndjson_lines_survive_any_split(size: int) -> None:
    data = b'{"a":1}\n\n{"b":2}\n{"c":3}'
    assert _collect(ndjson_lines(_pieces(data, size))) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


TEXT = "<think>\nI should add.\n</think>\n\nThe answer is 4."


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 100])
def test_think_splitter_any_chunking(size: int) -> None:
    splitter = ThinkSplitter()
    reasoning, content = "", ""
    for i in range(0, len(TEXT), size):
        r, c = splitter.feed(TEXT[i : i + size])
        reasoning, content = reasoning + r, content + c
    r, c = splitter.flush()
    assert (reasoning + r, content + c) == ("I should add.\n", "The answer is 4.")


def test_think_splitter_leaves_plain_content_alone() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("  <thi") == ("", "")
    assert splitter.feed("s is not a tag") == ("", "  <this is not a tag")
    assert splitter.feed(" <think>x</think>") == ("", " <think>x</think>")


def test_unterminated_think_is_reasoning() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<think>still going </thi") == ("still going ", "")
    assert splitter.flush() == ("</thi", "")


def test_inline_renderer_wraps_and_closes() -> None:
    renderer = ReasoningRenderer("inline")
    first = {"role": "assistant", "reasoning_content": "hmm"}
    renderer.render(first)
    second = {"content": "Hi"}
    renderer.render(second)
    assert first == {"role": "assistant", "content": "<think>hmm"}
    assert second == {"content": "</think>\n\nHi"}
    assert renderer.close() == ""


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("reasoning_content", {"reasoning_content": "r", "content": "c"}),
        ("reasoning", {"reasoning": "r", "content": "c"}),
        ("drop", {"content": "c"}),
    ],
)
def test_renderer_modes(mode: str, expected: dict[str, str]) -> None:
    delta = {"reasoning_content": "r", "content": "c"}
    ReasoningRenderer(mode).render(delta)
    assert delta == expected


def test_history_loses_reasoning() -> None:
    messages = [
        {"role": "user", "content": "<think>user text stays</think>"},
        {"role": "assistant", "content": "<think>secret</think>\n\nAnswer.", "reasoning_content": "secret"},
        {"role": "assistant", "content": "forced open secret\n</think>\n\nSecond."},
        {"role": "assistant", "content": [{"type": "text", "text": "<think>s</think>Third."}]},
    ]
    out = strip_reasoning_from_history(messages)
    assert out[0] == messages[0]
    assert out[1] == {"role": "assistant", "content": "Answer."}
    assert out[2]["content"] == "Second."
    assert out[3]["content"] == [{"type": "text", "text": "Third."}]
    assert strip_reasoning("no thinking here") == "no thinking here"


def test_huge_deltas_are_split_into_short_sse_lines() -> None:
    import orjson

    from proxy.upstream.frames import MAX_EVENT_BYTES, sse_event, sse_events

    text = "雨" * 100_000
    arguments = orjson.dumps({"body": "x" * 200_000}).decode()
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "delta": {
                    "content": text,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "write", "arguments": arguments},
                        }
                    ],
                },
            }
        ],
    }
    raw = sse_events(chunk)
    lines = raw.split(b"\n\n")[:-1]
    assert len(lines) > 2 and all(len(line) + 2 <= MAX_EVENT_BYTES for line in lines)
    chunks = [orjson.loads(line[len(b"data: ") :]) for line in lines]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content", "") for d in deltas) == text
    calls = [call for d in deltas for call in d.get("tool_calls", ())]
    assert calls[0]["id"] == "call_1" and calls[0]["function"]["name"] == "write"
    assert "".join(call["function"]["arguments"] for call in calls) == arguments
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["tool_calls"]
    assert all(c["id"] == "c" for c in chunks)
    small = {**chunk, "choices": [{"index": 0, "finish_reason": None, "delta": {"content": "hi"}}]}
    assert sse_events(small) == sse_event(small)
