"""The OpenAI-compatible dialect (``OpenAIUpstream``: llama.cpp, vLLM, LM Studio, Ollama's /v1):
requests go through as the client wrote them; replies are checked and normalised only where
clients depend on it."""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import orjson

from proxy.errors import NotFound, UpstreamError
from proxy.upstream.client import ModelInfo, Upstream
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


def tags_from_openai(listing: dict[str, Any]) -> dict[str, Any]:
    models = []
    for entry in listing.get("data") or []:
        created = entry.get("created")
        modified = (
            datetime.datetime.fromtimestamp(created, datetime.UTC).isoformat().replace("+00:00", "Z")
            if isinstance(created, int | float)
            else datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        )
        models.append(
            {
                "name": entry.get("id"),
                "model": entry.get("id"),
                "modified_at": modified,
                "size": 0,
                "digest": "",
                "details": {
                    "parent_model": "",
                    "format": "",
                    "family": "",
                    "families": None,
                    "parameter_size": "",
                    "quantization_level": "",
                },
            }
        )
    return {"models": models}


def from_props(props: dict[str, Any]) -> ModelInfo:
    """The window in llama.cpp's ``/props`` reply: one slot's context."""
    n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
    return ModelInfo(n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None, None)


class OpenAIUpstream(Upstream):
    """An OpenAI-compatible server: requests go through as the client wrote them; the window is
    the server's own (llama.cpp's ``/props``), and llama.cpp counts a prompt's tokens."""

    api = "openai"
    sizes_window = False
    reports_capabilities = False
    native_ollama = False
    window_advice = "raise the model server's context size (llama.cpp: --ctx-size)"

    async def _probe(self, deadline: float | None) -> dict[str, Any]:
        models = await self.get_json("/v1/models", deadline=deadline)
        return {"models": len(models.get("data") or ())}

    async def model_names(self, deadline: float | None = None) -> list[str]:
        """``/v1/models``, where llama.cpp's server adds the other names it answers to as ``aliases``."""
        listing = await self.get_json("/v1/models", deadline=deadline)
        names = []
        for entry in listing.get("data") or []:
            if isinstance(entry, dict):
                aliases = entry.get("aliases")
                names += [str(entry.get("id"))] + (
                    [str(a) for a in aliases] if isinstance(aliases, list) else []
                )
        return list(dict.fromkeys(names))

    async def models(self, deadline: float | None = None) -> list[dict[str, Any]]:
        return (await self.get_json("/v1/models", deadline=deadline)).get("data") or []

    async def model_entry(self, name: str) -> dict[str, Any]:
        return await self.get_json("/v1/models/" + quote(name, safe=""))  # type: ignore[no-any-return]

    async def model_info(self, model: str, deadline: float) -> ModelInfo:
        return from_props(await self.get_json("/props", deadline=deadline))

    async def require_model(self, model: str, deadline: float | None = None) -> None:
        """Such a server may answer for any name; Ollama clients expect a 404."""
        if model not in {entry.get("id") for entry in await self.models(deadline)}:
            raise NotFound(f"model '{model}' not found")

    def chat_request(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "/v1/chat/completions", chat_request(body)

    def chat_chunks(
        self, raw: AsyncIterator[bytes], model: str, split_inline_think: bool
    ) -> AsyncIterator[dict[str, Any]]:
        return chat_chunks(raw, split_inline_think)

    async def embed(
        self, body: dict[str, Any], native: Mapping[str, Any] | None = None
    ) -> tuple[list[list[float]], int]:
        reply = await self.post_json("/v1/embeddings", embed_request(body))
        try:
            items = sorted(reply["data"], key=lambda item: item.get("index", 0))
            vectors = [item["embedding"] for item in items]
        except (KeyError, TypeError, AttributeError):
            raise UpstreamError("upstream embeddings response has no 'data'") from None
        return vectors, int((reply.get("usage") or {}).get("prompt_tokens") or 0)

    async def embedding(self, body: dict[str, Any]) -> list[float]:
        vectors, _ = await self.embed({"model": body["model"], "input": [body.get("prompt", "")]})
        return vectors[0] if vectors else []

    @asynccontextmanager
    async def complete(
        self, body: dict[str, Any], deadline: float
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        sent = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with self.stream("/v1/completions", sent, deadline=deadline) as raw:
            yield completion_chunks(raw)

    async def ollama_tags(self) -> dict[str, Any]:
        return tags_from_openai({"data": await self.models()})

    async def ollama_show(
        self, body: dict[str, Any], model: str, info: Callable[[], Awaitable[ModelInfo]]
    ) -> dict[str, Any]:
        """What can be known of the model, in Ollama's shape: its window from ``info``."""
        await self.require_model(model)
        window = (await info()).window
        return {
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": tags_from_openai({"data": [{"id": model}]})["models"][0]["details"],
            "model_info": {"general.architecture": "unknown", "unknown.context_length": window or 4096},
            "capabilities": ["completion"],
        }

    async def count_prompt(self, body: dict[str, Any], *, deadline: float) -> int:
        """llama.cpp's ``/apply-template`` (its chat template, tools included) then ``/tokenize``.
        NotFound from a server without these."""
        chat = {key: body[key] for key in ("messages", "tools") if body.get(key)}
        prompt = (await self.post_json("/apply-template", chat, deadline=deadline)).get("prompt")
        if not isinstance(prompt, str):
            raise NotFound("/apply-template gave no prompt")
        counted = {"content": prompt, "add_special": True, "parse_special": True}
        tokens = (await self.post_json("/tokenize", counted, deadline=deadline)).get("tokens")
        if not isinstance(tokens, list):
            raise NotFound("/tokenize gave no tokens")
        return len(tokens)
