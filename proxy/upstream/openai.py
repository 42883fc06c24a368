"""An OpenAI-compatible upstream (llama.cpp, vLLM, LM Studio, Ollama's /v1): requests go through
as the client wrote them; replies are checked and normalised only where clients depend on it."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.errors import UpstreamError
from proxy.upstream.frames import sse_data
from proxy.upstream.reasoning import ThinkSplitter

_CONTENT_KEYS = ("content", "reasoning_content", "tool_calls", "refusal", "function_call")


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The client's body, streamed, with usage asked for (the proxy logs token counts; the usage
    chunk is only passed on when the client asked for it)."""
    stream_options = dict(body.get("stream_options") or {})
    stream_options["include_usage"] = True
    return {**body, "stream": True, "stream_options": stream_options}


def _upstream_error(chunk: dict[str, Any]) -> UpstreamError:
    error = chunk["error"]
    message = error.get("message") if isinstance(error, dict) else error
    return UpstreamError(f"upstream error: {message}")


async def chat_chunks(raw: AsyncIterator[bytes], split_inline_think: bool) -> AsyncIterator[dict[str, Any]]:
    """Upstream SSE as chunk dicts: one id and created, role in the first delta, reasoning in
    ``reasoning_content``, the finish reason in a chunk of its own, usage last."""
    chunk_id: str | None = None
    created = 0
    model = None
    first = True
    finished = False
    usage: dict[str, Any] | None = None
    splitter = ThinkSplitter() if split_inline_think else None
    saw_done = False

    async for chunk in _events(raw):
        if chunk is None:
            saw_done = True
            break
        if chunk_id is None:
            chunk_id = chunk.get("id") or "chatcmpl-" + secrets.token_hex(12)
            created = chunk.get("created") or int(time.time())
            model = chunk.get("model")
        chunk["id"], chunk["created"], chunk["object"] = chunk_id, created, "chat.completion.chunk"
        if chunk.get("usage"):
            usage = chunk.pop("usage")
        choices = chunk.get("choices") or []
        if not choices:
            continue
        choice = choices[0]
        delta = choice.get("delta") or {}
        reasoning = delta.pop("reasoning_content", None) or ""
        reasoning = reasoning or delta.pop("reasoning", None) or ""
        delta.pop("reasoning", None)
        finish = choice.get("finish_reason")
        if splitter is not None:
            content = delta.get("content")
            more, content = splitter.feed(content) if isinstance(content, str) else ("", content)
            if finish:
                tail_reasoning, tail_content = splitter.flush()
                more += tail_reasoning
                content = (content or "") + tail_content
            reasoning += more
            if content:
                delta["content"] = content
            elif isinstance(delta.get("content"), str):
                del delta["content"]
        if reasoning:
            delta["reasoning_content"] = reasoning
        if first:
            delta = {"role": "assistant", **delta}
            delta.setdefault("content", "")
        choice["delta"] = delta
        if finish:
            if first or any(delta.get(k) for k in _CONTENT_KEYS):
                yield {**chunk, "choices": [{**choice, "finish_reason": None}, *choices[1:]]}
            choice["delta"] = {}
            choice.pop("logprobs", None)
            finished = True
            yield chunk
        elif first or any(k != "role" for k in delta) or len(choices) > 1:
            yield chunk
        first = False

    if not finished:
        if not saw_done:
            raise UpstreamError("upstream ended the reply before it was done")
        yield {
            "id": chunk_id or "chatcmpl-" + secrets.token_hex(12),
            "object": "chat.completion.chunk",
            "created": created or int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    if usage is not None:
        yield {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }


def embed_request(body: dict[str, Any]) -> dict[str, Any]:
    """Floats are always asked for: not every server can encode base64; the proxy does it."""
    return {**body, "encoding_format": "float"}


async def completion_chunks(raw: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The upstream's ``/v1/completions`` events as they are, up to ``[DONE]``."""
    async for chunk in _events(raw):
        if chunk is None:
            return
        yield chunk
    raise UpstreamError("upstream closed the stream before [DONE]")


async def _events(raw: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any] | None]:
    """Each event's JSON object; None for ``[DONE]``. An event that is not a JSON object, or
    that carries an error, raises."""
    async for data in sse_data(raw):
        if data.strip() == b"[DONE]":
            yield None
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream sent an event that is not JSON") from None
        if not isinstance(chunk, dict):
            raise UpstreamError("upstream sent an event that is not a JSON object")
        if "error" in chunk:
            raise _upstream_error(chunk)
        yield chunk
