"""The OpenAI API: /v1/chat/completions, /v1/models, /v1/embeddings."""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.types import ASGIApp

from proxy.api.requestlog import request_record
from proxy.api.responders import ChatResponder
from proxy.api.schemas import parse_json_object, validate_chat, validate_embeddings
from proxy.errors import UpstreamError
from proxy.pipeline.chat import ChatCall, open_chat, prepare_chat
from proxy.settings import Settings
from proxy.upstream import ollama, openai
from proxy.upstream.client import Upstream

AnyRequest = Request[Any, Any, Any]


def _parts(request: AnyRequest) -> tuple[Settings, Upstream]:
    return request.app.state.settings, request.app.state.upstream


@post("/v1/chat/completions")
async def chat_completions(request: AnyRequest) -> ASGIApp:
    settings, upstream = _parts(request)
    body = validate_chat(parse_json_object(await request.body()), settings)
    call = prepare_chat(body)
    stream = bool(body.get("stream"))
    record = request_record(request.scope)
    record.update(model=body["model"], stream=stream)
    if settings.log_content:
        record["messages"] = body["messages"]

    @asynccontextmanager
    async def open_chunks() -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        try:
            async with open_chat(upstream, settings, call) as chunks:
                yield chunks
        finally:
            _record_stats(record, call)

    def usage() -> dict[str, int]:
        prompt = call.stats.prompt_tokens or 0
        completion = call.stats.completion_tokens or 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    return ChatResponder(open_chunks, stream=stream, usage=usage, record=record)


def _record_stats(record: dict[str, Any], call: ChatCall) -> None:
    stats = call.stats
    record.update(
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        finish_reason=stats.finish_reason,
        upstream_wait_ms=stats.upstream_wait_ms,
    )


@get("/v1/models")
async def list_models(request: AnyRequest) -> dict[str, Any]:
    _, upstream = _parts(request)
    if upstream.api == "ollama":
        return ollama.models_list(await upstream.get_json("/api/tags"))
    listing = await upstream.get_json("/v1/models")
    return {"object": "list", "data": listing.get("data") or []}


@get("/v1/models/{model:path}")
async def retrieve_model(request: AnyRequest, model: FromPath[str]) -> dict[str, Any]:
    _, upstream = _parts(request)
    name = model.lstrip("/")
    if upstream.api == "ollama":
        return ollama.model_entry(name, await upstream.post_json("/api/show", {"model": name}))
    return await upstream.get_json(upstream.model_path(name))  # type: ignore[no-any-return]


@post("/v1/embeddings", status_code=200)
async def embeddings(request: AnyRequest) -> dict[str, Any]:
    settings, upstream = _parts(request)
    body = validate_embeddings(parse_json_object(await request.body()), settings)
    request_record(request.scope).update(model=body["model"])
    if upstream.api == "ollama":
        vectors, tokens = ollama.embed_vectors(
            await upstream.post_json("/api/embed", ollama.embed_request(body))
        )
    else:
        reply = await upstream.post_json("/v1/embeddings", openai.embed_request(body))
        try:
            vectors = [item["embedding"] for item in sorted(reply["data"], key=lambda item: item["index"])]
        except (KeyError, TypeError):
            raise UpstreamError("upstream embeddings response has no 'data'") from None
        tokens = int((reply.get("usage") or {}).get("prompt_tokens") or 0)
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


def _base64(vector: list[float]) -> str:
    """Little-endian float32, as OpenAI encodes it."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")
