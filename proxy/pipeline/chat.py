"""One chat completion: the request made ready for the upstream, the reply as OpenAI chunks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from proxy.settings import Settings
from proxy.upstream import ollama, openai
from proxy.upstream.client import Upstream
from proxy.upstream.reasoning import ReasoningRenderer, strip_reasoning_from_history


@dataclass
class ChatStats:
    """Filled in as the reply streams; read by the request log."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    upstream_wait_ms: float | None = None  # from sending upstream to its first body bytes


@dataclass
class ChatCall:
    body: dict[str, Any]
    include_usage: bool
    stats: ChatStats = field(default_factory=ChatStats)


def prepare_chat(body: dict[str, Any]) -> ChatCall:
    """``body`` is a validated OpenAI chat body with its model resolved."""
    stream_options = body.get("stream_options")
    include_usage = bool(
        body.get("stream") and isinstance(stream_options, dict) and stream_options.get("include_usage")
    )
    body = {**body, "messages": strip_reasoning_from_history(body["messages"])}
    return ChatCall(body=body, include_usage=include_usage)


@asynccontextmanager
async def open_chat(
    upstream: Upstream, settings: Settings, call: ChatCall
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """Chunks of the reply, reasoning rendered as the settings say. Errors before the upstream
    answers raise here; later ones raise from the iterator."""
    split = settings.reasoning_format != "inline"
    if upstream.api == "ollama":
        path, request = "/api/chat", ollama.chat_request(call.body)

        def parse(raw: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
            return ollama.chat_chunks(raw, call.body["model"], split)
    else:
        path, request = "/v1/chat/completions", openai.chat_request(call.body)

        def parse(raw: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
            return openai.chat_chunks(raw, split)

    sent = time.perf_counter()
    async with upstream.stream(path, request) as raw:
        yield _rendered(parse(_timed_first(raw, sent, call.stats)), settings, call)


async def _timed_first(raw: AsyncIterator[bytes], sent: float, stats: ChatStats) -> AsyncIterator[bytes]:
    async for chunk in raw:
        if stats.upstream_wait_ms is None:
            stats.upstream_wait_ms = round((time.perf_counter() - sent) * 1000, 2)
        yield chunk


async def _rendered(
    chunks: AsyncIterator[dict[str, Any]], settings: Settings, call: ChatCall
) -> AsyncIterator[dict[str, Any]]:
    renderer = ReasoningRenderer(settings.reasoning_format)
    async for chunk in chunks:
        choices = chunk.get("choices")
        if not choices:
            usage = chunk.get("usage") or {}
            call.stats.prompt_tokens = usage.get("prompt_tokens")
            call.stats.completion_tokens = usage.get("completion_tokens")
            if call.include_usage:
                yield chunk
            continue
        choice = choices[0]
        if choice.get("finish_reason"):
            call.stats.finish_reason = choice["finish_reason"]
            tail = renderer.close()
            if tail:
                yield {**chunk, "choices": [{"index": 0, "delta": {"content": tail}, "finish_reason": None}]}
        else:
            renderer.render(choice["delta"])
        yield chunk
