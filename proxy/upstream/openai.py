"""An OpenAI-compatible upstream (llama.cpp, vLLM, LM Studio, Ollama's /v1): requests go through
as the client wrote them; replies are checked and normalised only where clients depend on it."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.errors import UpstreamError
from proxy.upstream.frames import choice_index, sse_data
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
    """Upstream SSE as chunk dicts, one choice each (``n`` above 1: every choice, by its
    ``index``): one id and created, role in each choice's first delta, reasoning in
    ``reasoning_content``, each finish reason in a chunk of its own, usage last."""
    chunk_id: str | None = None
    created = 0
    model = None
    usage: dict[str, Any] | None = None
    choices: dict[int, _Choice] = {}  # by index, in the order they first came
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
        for choice in chunk.get("choices") or []:
            index = choice_index(choice)
            state = choices.setdefault(index, _Choice(split_inline_think))
            for part in state.feed({**choice, "index": index}):
                yield {**chunk, "choices": [part]}

    base = {
        "id": chunk_id or "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion.chunk",
        "created": created or int(time.time()),
        "model": model,
    }
    unfinished = [index for index, state in choices.items() if not state.finished] if choices else [0]
    if unfinished and not saw_done:
        raise UpstreamError("upstream ended the reply before it was done")
    for index in unfinished:
        yield {**base, "choices": [{"index": index, "delta": {}, "finish_reason": "stop"}]}
    if usage is not None:
        yield {**base, "choices": [], "usage": usage}


class _Choice:
    """One choice of the reply as it streams: whether its first delta went out, its inline
    ``<think>`` split, whether it finished."""

    def __init__(self, split_inline_think: bool) -> None:
        self.first = True
        self.finished = False
        self.splitter = ThinkSplitter() if split_inline_think else None

    def feed(self, choice: dict[str, Any]) -> list[dict[str, Any]]:
        """The choice's parts to send: none for an empty delta, the finish apart from content."""
        delta = choice.get("delta") or {}
        reasoning = delta.pop("reasoning_content", None) or ""
        reasoning = reasoning or delta.pop("reasoning", None) or ""
        delta.pop("reasoning", None)
        finish = choice.get("finish_reason")
        if self.splitter is not None:
            content = delta.get("content")
            more, content = self.splitter.feed(content) if isinstance(content, str) else ("", content)
            if finish:
                tail_reasoning, tail_content = self.splitter.flush()
                more += tail_reasoning
                content = (content or "") + tail_content
            reasoning += more
            if content:
                delta["content"] = content
            elif isinstance(delta.get("content"), str):
                del delta["content"]
        if reasoning:
            delta["reasoning_content"] = reasoning
        first, self.first = self.first, False
        if first:
            delta = {"role": "assistant", **delta}
            delta.setdefault("content", "")
        choice["delta"] = delta
        if not finish:
            return [choice] if first or any(k != "role" for k in delta) else []
        self.finished = True
        parts = []
        if first or any(delta.get(k) for k in _CONTENT_KEYS):
            parts.append({**choice, "finish_reason": None})
        closing = {**choice, "delta": {}}
        closing.pop("logprobs", None)
        return [*parts, closing]


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
        if data.strip() == b"null":  # llama.cpp's server opens a batch of prompts with one
            continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream sent an event that is not JSON") from None
        if not isinstance(chunk, dict):
            raise UpstreamError("upstream sent an event that is not a JSON object")
        if "error" in chunk:
            raise _upstream_error(chunk)
        yield chunk
