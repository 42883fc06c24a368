"""The OpenAI API: /v1/chat/completions, /v1/models, /v1/embeddings."""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Callable
from typing import Any

import anyio
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.types import ASGIApp

from proxy.api import apis
from proxy.api.embedding import LOCAL_STEP, UPSTREAM_STEP, EmbedStep, check_inputs, embed_in_steps
from proxy.api.exchange import AnyRequest, chat_exchange, sources_header
from proxy.api.openapi import OPENAI_CHAT, OPENAI_EMBEDDINGS, documented
from proxy.api.requestlog import request_record
from proxy.api.responders import SSE_HEADERS, Responder
from proxy.api.schemas import read_checked, validate_chat, validate_embeddings
from proxy.api.security import key_collections
from proxy.errors import BadRequest, ProxyError
from proxy.index.service import IndexService
from proxy.pipeline.call import ChatCall
from proxy.pipeline.chat import visible_collections
from proxy.pipeline.controls import aliases, split_alias
from proxy.pipeline.services import Services
from proxy.text import estimate_tokens
from proxy.upstream.frames import DONE, choice_index, sse_event, sse_events


@post("/v1/chat/completions", status_code=200, operation_class=documented(OPENAI_CHAT))
async def chat_completions(request: AnyRequest, services: NamedDependency[Services]) -> ASGIApp:
    body = await read_checked(request, lambda raw: validate_chat(raw, services.settings))
    stream = bool(body.get("stream"))
    chat = chat_exchange(request, services, body, "openai", stream=stream)

    return Responder(
        chat.open,
        ChatFrames(chat.call, stream=stream),
        stream=stream,
        record=chat.record,
        extra_headers=lambda: sources_header(chat.call),
    )


@get("/v1/models", operation_class=documented())
async def list_models(request: AnyRequest, services: NamedDependency[Services]) -> dict[str, Any]:
    """The upstream's models, each followed by its retrieval aliases (``model+<collection>``,
    ``model+norag``) when there is an index."""
    pool, index = services.pool, services.index
    listing: dict[str, Any] = {"object": "list", "data": []}
    seen: set[Any] = set()
    for models in await pool.gather(lambda upstream: upstream.models()):  # the pool's models, each once
        for entry in models:
            if entry.get("id") not in seen:
                seen.add(entry.get("id"))
                listing["data"].append(entry)
    if index is not None:
        collections = visible_collections(index, key_collections(request.scope))
        data = []
        for entry in listing["data"]:
            data.append(entry)
            for alias in aliases(str(entry.get("id")), collections):
                data.append({**entry, "id": alias})
        listing["data"] = data
        embedder, _ = index.store.embedder()
        if embedder is not None:
            listing["data"].append({"id": embedder, "object": "model", "created": 0, "owned_by": "ragproxy"})
    return listing


@get("/v1/models/{model:path}", operation_class=documented())
async def retrieve_model(
    request: AnyRequest, services: NamedDependency[Services], model: FromPath[str]
) -> dict[str, Any]:
    alias = model.lstrip("/")
    name = split_alias(alias, visible_collections(services.index, key_collections(request.scope)))[0]
    entry = await services.pool.call(name, lambda upstream: upstream.model_entry(name))
    return {**entry, "id": alias} if name != alias else entry


@post("/v1/embeddings", status_code=200, operation_class=documented(OPENAI_EMBEDDINGS))
async def embeddings(request: AnyRequest, services: NamedDependency[Services]) -> dict[str, Any]:
    pool, index = services.pool, services.index
    body = await read_checked(request, lambda raw: validate_embeddings(raw, services.settings))
    request_record(request.scope).update(model=body["model"])
    given = body["input"]
    single = isinstance(given, str) or all(isinstance(t, int) for t in given)  # a text or one token array
    inputs = [given] if single else given
    check_inputs(inputs)
    step: EmbedStep
    local = index is not None and index.serves_model(body["model"])
    if index is not None and local:
        serving = index
        embed = await anyio.to_thread.run_sync(lambda: _local_embedding(serving, body, inputs))  # may load it

        async def step(batch: list[Any]) -> tuple[list[list[float]], int]:
            return await anyio.to_thread.run_sync(lambda: embed(batch))
    else:

        async def step(batch: list[Any]) -> tuple[list[list[float]], int]:
            part = {**body, "input": batch}
            return await pool.call(body["model"], lambda upstream: upstream.embed(part))

    vectors, tokens = await embed_in_steps(request, inputs, step, LOCAL_STEP if local else UPSTREAM_STEP)
    as_base64 = body.get("encoding_format") == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": _base64(v) if as_base64 else v}
        for i, v in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _local_embedding(
    index: IndexService, body: dict[str, Any], inputs: list[Any]
) -> Callable[[list[str]], tuple[list[list[float]], int]]:
    """What embeds a step of ``inputs`` with the index's embedder, once the request is known to
    suit it. ``input_type`` (an extension some APIs share): "query" embeds search queries,
    anything else passages, with the prefixes the model needs."""
    if not all(isinstance(text, str) for text in inputs):
        raise BadRequest("the index's embedder reads text, not token arrays", param="input")
    embedder = index.embedder
    if body.get("dimensions") not in (None, embedder.dim):
        raise BadRequest(f"{embedder.name} has {embedder.dim} dimensions", param="dimensions")
    as_query = body.get("input_type") == "query"

    def embed(texts: list[str]) -> tuple[list[list[float]], int]:
        vectors = [embedder.embed_query(t) for t in texts] if as_query else embedder.embed_documents(texts)
        return vectors, sum(estimate_tokens(text) for text in texts)

    return embed


def _base64(vector: list[float]) -> str:
    """Little-endian float32, as OpenAI encodes it."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


class ChatFrames:
    """``chat.completion.chunk`` events ending in ``[DONE]``; or, for a request that does not
    stream, one ``chat.completion`` with a choice per index seen, usage and sources."""

    stream_headers = SSE_HEADERS
    json_type = b"application/json"

    def __init__(self, call: ChatCall, *, stream: bool) -> None:
        self.call = call
        self.stream = stream
        self.completion: dict[str, Any] = {}
        self.choices: dict[int, _Aggregate] = {}

    def start(self) -> bytes:
        return b""

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if self.stream:
            return sse_events(chunk)
        if not self.completion:
            self.completion = {
                "id": chunk.get("id"),
                "object": "chat.completion",
                "created": chunk.get("created"),
                "model": chunk.get("model"),
                "system_fingerprint": chunk.get("system_fingerprint"),
            }
        for choice in chunk.get("choices") or ():
            self.choices.setdefault(choice_index(choice), _Aggregate()).add(choice)
        return b""

    def end(self) -> bytes:
        return DONE

    def fail(self, error: ProxyError) -> bytes:
        return sse_event(error.body()) + DONE

    def whole(self) -> Any:
        choices = self.choices
        completion = dict(self.completion)
        completion["choices"] = [choices[i].choice(i) for i in sorted(choices)] or [_Aggregate().choice(0)]
        stats = self.call.stats
        prompt, completed = stats.prompt_tokens or 0, stats.completion_tokens or 0
        completion["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completed,
            "total_tokens": prompt + completed,
        }
        completion.update(self.call.rag.fields())
        return completion

    def error(self, error: ProxyError) -> tuple[int, Any]:
        return error.status, error.body()


class _Aggregate:
    """One choice's deltas, gathered into its message."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {"role": "assistant", "content": None}
        self.texts: dict[str, list[str]] = {}
        self.calls: dict[int, dict[str, Any]] = {}
        self.logprobs: list[Any] = []
        self.finish: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        for key, value in (choice.get("delta") or {}).items():
            if key == "tool_calls":
                for call in value:
                    _merge_call(self.calls.setdefault(call.get("index", len(self.calls)), {}), call)
            elif key != "role" and isinstance(value, str):
                self.texts.setdefault(key, []).append(value)
            elif key != "role" and value is not None:
                self.message.setdefault(key, value)
        if isinstance(choice.get("logprobs"), dict):
            self.logprobs.extend(choice["logprobs"].get("content") or ())
        self.finish = choice.get("finish_reason") or self.finish

    def choice(self, index: int) -> dict[str, Any]:
        message = dict(self.message)
        for key, parts in self.texts.items():
            message[key] = "".join(parts)
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return {
            "index": index,
            "message": message,
            "logprobs": {"content": self.logprobs} if self.logprobs else None,
            "finish_reason": self.finish or "stop",
        }


def _merge_call(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key in ("id", "type"):
        if part.get(key):
            into[key] = part[key]
    function = into.setdefault("function", {"name": "", "arguments": ""})
    for key in ("name", "arguments"):
        value = (part.get("function") or {}).get(key)
        if value:
            function[key] += value


router = apis.router(apis.OPENAI, [chat_completions, list_models, retrieve_model, embeddings])
