"""The OpenAI API: /v1/chat/completions, /v1/models, /v1/embeddings."""

from __future__ import annotations

import base64
import dataclasses
import sys
from array import array
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from litestar import Request, get, post
from litestar.params import FromPath
from litestar.types import ASGIApp

from proxy.api.embedding import LOCAL_STEP, UPSTREAM_STEP, EmbedStep, check_inputs, embed_in_steps
from proxy.api.openapi import OPENAI_CHAT, OPENAI_EMBEDDINGS, documented
from proxy.api.requestlog import note_sources, request_record
from proxy.api.responders import ChatResponder, OpenChunks
from proxy.api.schemas import read_checked, validate_chat, validate_embeddings
from proxy.api.security import key_collections
from proxy.errors import BadRequest, UpstreamError
from proxy.index.service import IndexService
from proxy.pipeline import clients
from proxy.pipeline.chat import ChatCall, augment, open_reply, prepare_chat, visible_collections
from proxy.pipeline.controls import aliases, split_alias
from proxy.settings import Settings
from proxy.text import estimate_tokens
from proxy.upstream import ollama, openai
from proxy.upstream.client import Upstream
from proxy.upstream.pool import UpstreamPool

AnyRequest = Request[Any, Any, Any]


def _parts(request: AnyRequest) -> tuple[Settings, UpstreamPool]:
    return request.app.state.settings, request.app.state.pool


def rag_headers(request: AnyRequest) -> dict[str, str]:
    return {
        name.lower(): value for name, value in request.headers.items() if name.lower().startswith("x-rag")
    }


def sources_header(call: ChatCall) -> list[tuple[bytes, bytes]]:
    """``X-RAGProxy-Sources``: passages sent; ``X-RAGProxy-Context``: "3/5 passages fit" when
    some that were found had no room."""
    if not call.rag.attempted:
        return []
    headers = [(b"x-ragproxy-sources", str(len(call.rag.passages)).encode())]
    if cut := call.rag.cut():
        headers.append((b"x-ragproxy-context", cut.encode()))
    return headers


async def augment_request(request: AnyRequest, call: ChatCall, api: str) -> None:
    """Retrieval and context fitting for this request, with its headers and its key's
    collections (``api``: which API it came in on; with the client, it decides how sources are
    shown)."""
    state = request.app.state
    client = client_kind(request.headers.get("user-agent", ""))
    # Only a chat UI's own tools give way to passages; an agent's never do (on any wire).
    call.tools_give_way = api in ("openai", "ollama") and (
        client == "open-webui" or clients.chat_ui_builtins(call.body.get("tools"))
    )
    await augment(
        call,
        headers=rag_headers(request),
        index=state.index,
        pool=state.pool,
        settings=state.settings,
        windows=state.windows,
        footnote_default=footnote_default(state.settings, api, client),
        source_events=api == "openai" and client == "open-webui",
        reranker=state.reranker,
        allowed=key_collections(request.scope),
    )


def client_kind(user_agent: str) -> str:
    """ "open-webui" (its aiohttp session sends aiohttp's own User-Agent), or "other"."""
    return "open-webui" if "aiohttp/" in user_agent else "other"


def footnote_default(settings: Settings, api: str, client: str) -> bool:
    """``auto``: the answer text gets the footnote wherever nothing else shows the sources to a
    person: everywhere but Open WebUI's OpenAI connection, which gets them as source events (its
    chips). Agents and CLIs built on the official SDKs (aider, Copilot CLI, llm) show nothing
    but the text; a script that reads the ``sources`` field can turn the footnote off
    (``X-RAG-Footnote: off``, ``"rag": {"footnote": false}``)."""
    if settings.sources_footnote != "auto":
        return settings.sources_footnote == "on"
    return not (api == "openai" and client == "open-webui")


@post("/v1/chat/completions", status_code=200, operation_class=documented(OPENAI_CHAT))
async def chat_completions(request: AnyRequest) -> ASGIApp:
    settings, _ = _parts(request)
    body = await read_checked(request, lambda raw: validate_chat(raw, settings))
    stream = bool(body.get("stream"))
    call, record, open_chunks = chat_exchange(request, body, "openai", stream=stream)

    def usage() -> dict[str, int]:
        prompt = call.stats.prompt_tokens or 0
        completion = call.stats.completion_tokens or 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    return ChatResponder(
        open_chunks,
        stream=stream,
        usage=usage,
        record=record,
        extra_headers=lambda: sources_header(call),
        extra_fields=call.rag.fields,
    )


def chat_exchange(
    request: AnyRequest, body: dict[str, Any], api: str, *, stream: bool, agent: bool = False
) -> tuple[ChatCall, dict[str, Any], OpenChunks]:
    """For a validated chat body: its call, its request-log record, and the opener of its
    chunks (retrieval and fitting for this request, then the upstream). ``api``: the wire it
    came in on. ``agent``: an agent's wire (Responses, Messages), whose tools are never traded
    for passages and whose reasoning goes into items of its own, whatever the chat setting."""
    settings, pool = _parts(request)
    call = prepare_chat(body)
    record = request_record(request.scope)
    record.update(model=body["model"], stream=stream)
    if settings.log_content:
        record["messages"] = body["messages"]
    if agent:
        settings = dataclasses.replace(settings, reasoning_format="reasoning_content")

    @asynccontextmanager
    async def open_chunks() -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        try:
            await augment_request(request, call, api)
            record["model"] = call.body["model"]
            async with open_reply(pool, settings, call) as chunks:
                yield chunks
        finally:
            _record_stats(record, call)
            note_sources(request.scope, call.rag.sources())

    return call, record, open_chunks


def _record_stats(record: dict[str, Any], call: ChatCall) -> None:
    stats = call.stats
    record.update(
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        finish_reason=stats.finish_reason,
        upstream_wait_ms=stats.upstream_wait_ms,
        upstream=stats.upstream,
        truncated=stats.truncated or None,
        **call.rag.record(),
    )


@get("/v1/models", operation_class=documented())
async def list_models(request: AnyRequest) -> dict[str, Any]:
    """The upstream's models, each followed by its retrieval aliases (``model+<collection>``,
    ``model+norag``) when there is an index."""
    _, pool = _parts(request)
    listing: dict[str, Any] = {"object": "list", "data": []}
    seen: set[Any] = set()
    for models in await pool.gather(_models):  # the pool's models, each once
        for entry in models:
            if entry.get("id") not in seen:
                seen.add(entry.get("id"))
                listing["data"].append(entry)
    index = request.app.state.index
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


async def _models(upstream: Upstream) -> list[dict[str, Any]]:
    if upstream.api == "ollama":
        entries: list[dict[str, Any]] = ollama.models_list(await upstream.get_json("/api/tags"))["data"]
        return entries
    return (await upstream.get_json("/v1/models")).get("data") or []


@get("/v1/models/{model:path}", operation_class=documented())
async def retrieve_model(request: AnyRequest, model: FromPath[str]) -> dict[str, Any]:
    _, pool = _parts(request)
    alias = model.lstrip("/")
    index = request.app.state.index
    name = split_alias(alias, visible_collections(index, key_collections(request.scope)))[0]
    entry = await pool.call(name, lambda upstream: _model_entry(upstream, name))
    return {**entry, "id": alias} if name != alias else entry


async def _model_entry(upstream: Upstream, name: str) -> dict[str, Any]:
    if upstream.api == "ollama":
        return ollama.model_entry(name, await upstream.post_json("/api/show", {"model": name}))
    return await upstream.get_json(upstream.model_path(name))  # type: ignore[no-any-return]


@post("/v1/embeddings", status_code=200, operation_class=documented(OPENAI_EMBEDDINGS))
async def embeddings(request: AnyRequest) -> dict[str, Any]:
    settings, pool = _parts(request)
    body = await read_checked(request, lambda raw: validate_embeddings(raw, settings))
    request_record(request.scope).update(model=body["model"])
    given = body["input"]
    single = isinstance(given, str) or all(isinstance(t, int) for t in given)  # a text or one token array
    inputs = [given] if single else given
    check_inputs(inputs)
    index = request.app.state.index
    step: EmbedStep
    local = index is not None and index.serves_model(body["model"])
    if local:
        embed = await anyio.to_thread.run_sync(lambda: _local_embedding(index, body, inputs))  # may load it

        async def step(batch: list[Any]) -> tuple[list[list[float]], int]:
            return await anyio.to_thread.run_sync(lambda: embed(batch))
    else:

        async def step(batch: list[Any]) -> tuple[list[list[float]], int]:
            part = {**body, "input": batch}
            return await pool.call(body["model"], lambda upstream: _embed_upstream(upstream, part))

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


async def _embed_upstream(upstream: Upstream, body: dict[str, Any]) -> tuple[list[list[float]], int]:
    if upstream.api == "ollama":
        return ollama.embed_vectors(await upstream.post_json("/api/embed", ollama.embed_request(body)))
    reply = await upstream.post_json("/v1/embeddings", openai.embed_request(body))
    try:
        vectors = [item["embedding"] for item in sorted(reply["data"], key=lambda item: item["index"])]
    except (KeyError, TypeError):
        raise UpstreamError("upstream embeddings response has no 'data'") from None
    return vectors, int((reply.get("usage") or {}).get("prompt_tokens") or 0)


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
