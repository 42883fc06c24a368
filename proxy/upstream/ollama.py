"""The Ollama dialect (``OllamaUpstream``): OpenAI chat, embeddings, models and completions as
Ollama's native API (ollama/ollama docs/api.md), and its replies back as OpenAI chunks."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson

from proxy.client_json import loads_json
from proxy.errors import BadRequest, UpstreamError
from proxy.upstream.client import ModelInfo, Upstream
from proxy.upstream.frames import json_lines
from proxy.upstream.reasoning import ThinkSplitter

# OpenAI sampling fields that map one-to-one onto Ollama `options`.
_SAME_OPTIONS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
# Sampling fields that OpenAI-compatible servers accept as extensions and Ollama knows too.
_EXTRA_OPTIONS = ("top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n", "num_ctx")
# Ollama request fields a client may send through the OpenAI API as extensions.
_OLLAMA_FIELDS = ("keep_alive", "think", "format", "truncate", "shift")
_IMAGE_PREFIXES = (
    "data:;base64,",
    "data:image/jpeg;base64,",
    "data:image/jpg;base64,",
    "data:image/png;base64,",
    "data:image/webp;base64,",
)


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion body as an Ollama ``/api/chat`` body (always streamed).
    Unlike Ollama's own /v1 layer, unset sampling fields stay unset, so the model's own defaults hold.
    Ollama makes one reply per request: ``n`` above 1 is refused, not quietly answered with one."""
    if (body.get("n") or 1) != 1:
        raise BadRequest("'n' above 1 is not supported by an Ollama upstream", param="n")
    messages = body["messages"]
    names = _tool_names(messages)
    request: dict[str, Any] = {
        "model": body["model"],
        "messages": [_message(m, names) for m in messages],
        "stream": True,
    }
    options: dict[str, Any] = {}
    for name in _SAME_OPTIONS + _EXTRA_OPTIONS:
        if body.get(name) is not None:
            options[name] = body[name]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list) and stop:
        options["stop"] = stop
    if isinstance(body.get("options"), dict):
        options.update(body["options"])
    if options:
        request["options"] = options

    tools = body.get("tools")
    if tools and body.get("tool_choice") != "none":
        request["tools"] = tools
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            request["format"] = "json"
        elif kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            if schema is not None:
                request["format"] = schema
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    effort = effort or body.get("reasoning_effort")
    if effort:
        request["think"] = False if effort == "none" else effort
    for name in _OLLAMA_FIELDS:
        if name in body:
            request[name] = body[name]
    return request


def _message(message: dict[str, Any], tool_names: dict[Any, Any]) -> dict[str, Any]:
    role = message["role"]
    out: dict[str, Any] = {"role": "system" if role == "developer" else role}
    content = message.get("content")
    if isinstance(content, list):
        texts: list[str] = []
        images: list[str] = []
        for part in content:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            elif part.get("type") == "image_url":
                images.append(_image(part.get("image_url")))
            else:
                raise BadRequest(f"unsupported content part type {part.get('type')!r}", param="messages")
        out["content"] = "\n".join(texts)
        if images:
            out["images"] = images
    else:
        out["content"] = content or ""
    if message.get("tool_calls"):
        out["tool_calls"] = [_tool_call(call) for call in message["tool_calls"]]
    if role == "tool":
        call_id = message.get("tool_call_id")
        name = message.get("name") or (tool_names.get(call_id) if isinstance(call_id, str) else None)
        if name:
            out["tool_name"] = name
    return out


def _image(image_url: Any) -> str:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if isinstance(url, str):
        for prefix in _IMAGE_PREFIXES:
            if url.startswith(prefix):
                return url[len(prefix) :]
    raise BadRequest(
        "images must be base64 data URLs (jpeg, png or webp) for an Ollama upstream", param="messages"
    )


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        arguments = loads_json(arguments, "tool call arguments", "messages") if arguments.strip() else {}
    out: dict[str, Any] = {"function": {"name": function.get("name"), "arguments": arguments or {}}}
    if call.get("id"):
        out["id"] = call["id"]
    return out


def _tool_names(messages: list[dict[str, Any]]) -> dict[Any, Any]:
    """Each tool call's function name by call id (a later call with the same id wins), gathered
    once: a tool result names the function Ollama ran, and agents send thousands of messages."""
    names: dict[Any, Any] = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                names[call["id"]] = (call.get("function") or {}).get("name")
    return names


async def chat_chunks(
    raw: AsyncIterator[bytes], model: str, split_inline_think: bool
) -> AsyncIterator[dict[str, Any]]:
    """Ollama NDJSON lines as OpenAI ``chat.completion.chunk`` dicts, reasoning in
    ``reasoning_content``; ends with the finish chunk and a ``choices: []`` usage chunk."""
    chunk_id = "chatcmpl-" + secrets.token_hex(12)
    created = int(time.time())
    splitter = ThinkSplitter() if split_inline_think else None
    first = True
    tool_index = 0

    base = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_ollama",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    async for data in json_lines(raw):
        if "error" in data:
            raise UpstreamError(f"upstream error: {data['error']}")
        message = data.get("message") or {}
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        reasoning = message.get("thinking") or ""
        content = message.get("content") or ""
        if splitter is not None:
            more_reasoning, content = splitter.feed(content)
            if data.get("done"):
                tail_reasoning, tail_content = splitter.flush()
                more_reasoning += tail_reasoning
                content += tail_content
            reasoning += more_reasoning
        if reasoning:
            delta["reasoning_content"] = reasoning
        if content:
            delta["content"] = content
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                calls.append(
                    {
                        "index": tool_index,
                        "id": call.get("id") or "call_" + secrets.token_hex(8),
                        "type": "function",
                        "function": {
                            "name": function.get("name"),
                            "arguments": orjson.dumps(function.get("arguments") or {}).decode(),
                        },
                    }
                )
                tool_index += 1
            delta["tool_calls"] = calls
        if first:
            delta.setdefault("content", "")
        if first or delta:
            yield chunk(delta)
            first = False
        if data.get("done"):
            if tool_index:
                finish = "tool_calls"
            elif data.get("done_reason") == "length":
                finish = "length"
            else:
                finish = "stop"  # also "load"/"unload", which carry no text
            yield chunk({}, finish)
            prompt = int(data.get("prompt_eval_count") or 0)
            completion = int(data.get("eval_count") or 0)
            yield {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
            return
    raise UpstreamError("upstream ended the reply before it was done")


def models_list(tags: dict[str, Any]) -> dict[str, Any]:
    """``/api/tags`` as OpenAI's model list."""
    entries = tags.get("models") or ()
    return {"object": "list", "data": [model_entry(e.get("name") or e.get("model"), e) for e in entries]}


def model_entry(name: str, details: dict[str, Any]) -> dict[str, Any]:
    """One model in OpenAI's shape, from its ``/api/tags`` entry or ``/api/show`` reply."""
    return {
        "id": name,
        "object": "model",
        "created": _unix(details.get("modified_at")),
        "owned_by": name.split("/")[0] if "/" in name else "library",
    }


def _unix(stamp: Any) -> int:
    if not isinstance(stamp, str):
        return 0
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def embed_request(body: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {"model": body["model"], "input": body["input"]}
    if body.get("dimensions") is not None:
        request["dimensions"] = body["dimensions"]
    for name in ("truncate", "keep_alive", "options"):
        if name in body:
            request[name] = body[name]
    return request


def embed_vectors(response: dict[str, Any]) -> tuple[list[list[float]], int]:
    vectors = response.get("embeddings")
    if not isinstance(vectors, list):
        raise UpstreamError("upstream embed response has no 'embeddings'")
    return vectors, int(response.get("prompt_eval_count") or 0)


# -- legacy completions -----------------------------------------------------------------------------
def generate_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI ``/v1/completions`` body as an Ollama ``/api/generate`` body (streamed): the
    prompt and ``suffix`` (fill in the middle) as they are, sampling fields as options."""
    request: dict[str, Any] = {"model": body["model"], "prompt": body["prompt"], "stream": True}
    if body.get("suffix"):
        request["suffix"] = body["suffix"]
    chat_like = chat_request({**body, "messages": []})
    if "options" in chat_like:
        request["options"] = chat_like["options"]
    return request


async def completion_chunks(raw: AsyncIterator[bytes], model: str) -> AsyncIterator[dict[str, Any]]:
    """Ollama ``/api/generate`` lines as OpenAI ``text_completion`` chunks: the text (a thinking
    model's thinking left out), the finish reason on a chunk of its own, usage last."""
    base = {
        "id": "cmpl-" + secrets.token_hex(12),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_ollama",
    }

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    async for data in json_lines(raw):
        if "error" in data:
            raise UpstreamError(f"upstream error: {data['error']}")
        if text := data.get("response") or "":
            yield chunk(text)
        if data.get("done"):
            yield chunk("", "length" if data.get("done_reason") == "length" else "stop")
            prompt, completion = int(data.get("prompt_eval_count") or 0), int(data.get("eval_count") or 0)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            yield {**base, "choices": [], "usage": usage}
            return
    raise UpstreamError("upstream closed the stream before it was done")


# -- the dialect ------------------------------------------------------------------------------------
def model_key(name: str) -> str:
    """A model name as Ollama compares it: case ignored, no tag read as ``:latest`` (``llama3`` is
    ``llama3:latest``)."""
    name = name.casefold()
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def from_show(show: dict[str, Any]) -> ModelInfo:
    """The window and capabilities in Ollama's ``/api/show`` reply."""
    window = None
    for key, value in (show.get("model_info") or {}).items():
        if key.endswith(".context_length") and isinstance(value, int):
            window = value
    capabilities = show.get("capabilities")
    return ModelInfo(window, tuple(str(c) for c in capabilities) if isinstance(capabilities, list) else None)


class OllamaUpstream(Upstream):
    """Ollama's native API: ``/api/chat`` with ``num_ctx`` set per request, ``/api/show`` for a
    model's window and capabilities, ``/api/embed``, ``/api/generate``."""

    api = "ollama"
    sizes_window = True
    reports_capabilities = True
    native_ollama = True
    window_advice = "choose a model with a longer context (this one's is {window} tokens)"

    async def _probe(self, deadline: float | None) -> dict[str, Any]:
        info: dict[str, Any] = await self.get_json("/api/version", deadline=deadline)
        return info

    model_key = staticmethod(model_key)

    async def model_names(self, deadline: float | None = None) -> list[str]:
        tags = await self.ollama_tags(deadline)
        return [str(m.get("name") or m.get("model")) for m in tags.get("models") or [] if isinstance(m, dict)]

    async def models(self, deadline: float | None = None) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = models_list(await self.ollama_tags(deadline))["data"]
        return entries

    async def model_entry(self, name: str) -> dict[str, Any]:
        return model_entry(name, await self.post_json("/api/show", {"model": name}))

    async def model_info(self, model: str, deadline: float) -> ModelInfo:
        return from_show(await self.post_json("/api/show", {"model": model}, deadline=deadline))

    def chat_request(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "/api/chat", chat_request(body)

    def chat_chunks(
        self, raw: AsyncIterator[bytes], model: str, split_inline_think: bool
    ) -> AsyncIterator[dict[str, Any]]:
        return chat_chunks(raw, model, split_inline_think)

    async def embed(
        self, body: dict[str, Any], native: Mapping[str, Any] | None = None
    ) -> tuple[list[list[float]], int]:
        if any(not isinstance(item, str) for item in body["input"]):
            raise BadRequest(
                "token-array input is not supported by an Ollama upstream; send text", param="input"
            )
        # an Ollama client's own request goes as it came, with this step's inputs
        request = (
            {**native, "model": body["model"], "input": body["input"]} if native else embed_request(body)
        )
        return embed_vectors(await self.post_json("/api/embed", request))

    async def embedding(self, body: dict[str, Any]) -> list[float]:
        vector: list[float] = (await self.post_json("/api/embeddings", body)).get("embedding") or []
        return vector

    @asynccontextmanager
    async def complete(
        self, body: dict[str, Any], deadline: float
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        check_completion(body)
        prompt = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]
        sent = generate_request({**body, "prompt": prompt})
        async with self.stream("/api/generate", sent, deadline=deadline) as raw:
            yield completion_chunks(raw, body["model"])

    async def ollama_tags(self, deadline: float | None = None) -> dict[str, Any]:
        tags: dict[str, Any] = await self.get_json("/api/tags", deadline=deadline)
        return tags

    async def ollama_show(
        self, body: dict[str, Any], model: str, info: Callable[[], Awaitable[ModelInfo]]
    ) -> dict[str, Any]:
        shown: dict[str, Any] = await self.post_json("/api/show", {**body, "model": model})
        return shown


def check_completion(body: dict[str, Any]) -> None:
    """What Ollama's /api/generate cannot do: token arrays, several prompts or choices, echo."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) and not all(isinstance(p, str) for p in prompt or ()):
        raise BadRequest("'prompt' must be a string (or an array of strings)", param="prompt")
    if isinstance(prompt, list) and len(prompt) != 1:
        raise BadRequest("an Ollama upstream completes one prompt at a time", param="prompt")
    if (body.get("n") or 1) != 1 or (body.get("best_of") or 1) != 1:
        raise BadRequest("'n' and 'best_of' above 1 are not supported by an Ollama upstream", param="n")
    if body.get("echo"):
        raise BadRequest("'echo' is not supported by an Ollama upstream", param="echo")
