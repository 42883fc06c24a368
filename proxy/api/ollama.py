"""The Ollama API on the same port as the OpenAI one: what Ollama clients (Open WebUI's Ollama
connection, AnythingLLM's Ollama provider, the ``ollama`` packages) call, with retrieval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
from litestar import Request, get, post, route
from litestar.di import NamedDependency
from litestar.types import ASGIApp

from proxy.api import apis, ollama_wire
from proxy.api.embedding import LOCAL_STEP, UPSTREAM_STEP, EmbedStep, check_inputs, embed_in_steps
from proxy.api.exchange import exchange, sources_header
from proxy.api.ollama_manage import forward
from proxy.api.openapi import (
    OLLAMA_CHAT,
    OLLAMA_EMBED,
    OLLAMA_EMBEDDINGS,
    OLLAMA_GENERATE,
    OLLAMA_SHOW,
    documented,
)
from proxy.api.responders import Responder
from proxy.api.schemas import read_checked, read_json_object
from proxy.api.security import key_collections
from proxy.errors import ProxyError
from proxy.index.service import IndexService
from proxy.logging import get_logger
from proxy.pipeline.call import ChatCall
from proxy.pipeline.chat import visible_collections
from proxy.pipeline.controls import split_alias
from proxy.pipeline.services import Services
from proxy.text import estimate_tokens
from proxy.upstream.client import Upstream

log = get_logger("ragproxy.ollama")

AnyRequest = Request[Any, Any, Any]
NDJSON = [(b"content-type", b"application/x-ndjson")]
JSON = [(b"content-type", b"application/json; charset=utf-8")]


def _error(exc: ProxyError) -> dict[str, str]:
    return {"error": exc.message}


class LinesFrames:
    """An Ollama reply: NDJSON lines, or one object for ``stream: false``; an error after the
    first line is one more line, ``{"error": ...}``, as Ollama sends it."""

    stream_headers = NDJSON
    json_type = b"application/json; charset=utf-8"

    def __init__(self, kind: str, *, stream: bool) -> None:
        self.kind = kind
        self.stream = stream
        self.lines: list[dict[str, Any]] = []

    def start(self) -> bytes:
        return b""

    def feed(self, line: dict[str, Any]) -> bytes:
        if self.stream:
            return orjson.dumps(line) + b"\n"
        self.lines.append(line)
        return b""

    def end(self) -> bytes:
        return b""

    def fail(self, error: ProxyError) -> bytes:
        return orjson.dumps(_error(error)) + b"\n"

    def whole(self) -> Any:
        return ollama_wire.whole(self.lines, self.kind)

    def error(self, error: ProxyError) -> tuple[int, Any]:
        return error.status, _error(error)


# -- probes and models ---------------------------------------------------------------------------------
@route("/", http_method=["GET", "HEAD"], media_type="text/plain")
async def root() -> str:
    return "Ollama is running"


@get("/api/version", operation_class=documented())
async def version(request: AnyRequest, services: NamedDependency[Services]) -> Any:
    pool = services.pool
    if pool.native_ollama():
        return await pool.call(None, lambda upstream: upstream.get_json("/api/version"), ollama=True)
    return {"version": ollama_wire.OLLAMA_VERSION}


@get("/api/tags", operation_class=documented())
async def tags(request: AnyRequest, services: NamedDependency[Services]) -> dict[str, Any]:
    """The upstream's models, each followed by its retrieval aliases."""
    pool, index = services.pool, services.index
    listing: dict[str, Any] = {"models": []}
    seen: set[str] = set()
    for tags in await pool.gather(lambda upstream: upstream.ollama_tags()):  # the pool's models, each once
        for entry in tags.get("models") or []:
            name = entry.get("name") or entry.get("model")
            if name not in seen:
                seen.add(name)
                listing["models"].append(entry)
    collections = visible_collections(index, key_collections(request.scope))
    return ollama_wire.tags_with_aliases(listing, collections) if collections else listing


def _base_model(name: str, index: IndexService | None, allowed: tuple[str, ...] | None) -> str:
    return split_alias(name, visible_collections(index, allowed))[0]


@post("/api/show", status_code=200, operation_class=documented(OLLAMA_SHOW))
async def show(request: AnyRequest, services: NamedDependency[Services]) -> Any:
    """Passed through (an alias shows its model), so ``model_info`` and ``capabilities`` reach
    the client intact. With an OpenAI-compatible upstream, what can be known is reported."""
    pool, index = services.pool, services.index
    body = await read_json_object(request)
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name:
        raise ProxyError("model is required", status=400)
    model = _base_model(name, index, key_collections(request.scope))
    return await pool.call(
        model, lambda upstream: upstream.ollama_show(body, model, lambda: services.windows.info(pool, model))
    )


@get("/api/ps", operation_class=documented())
async def ps(request: AnyRequest, services: NamedDependency[Services]) -> Any:
    pool = services.pool
    if not pool.native_ollama():
        return {"models": []}
    running = await pool.gather(lambda upstream: upstream.get_json("/api/ps"), ollama=True)
    return {"models": [model for ps in running for model in ps.get("models") or []]}


# -- chat and generate -------------------------------------------------------------------------------------
def _lines_app(
    request: AnyRequest, services: NamedDependency[Services], body: dict[str, Any], kind: str
) -> ASGIApp:
    settings = services.settings
    original = body
    stream = body.get("stream", True) is not False
    call = ChatCall(body=ollama_wire.as_chat(body) if kind == "generate" else dict(body), include_usage=False)
    call.body.setdefault("messages", [])
    path = f"/api/{kind}"
    # Loading or unloading a model (no messages, or an empty prompt) and raw prompts pass straight.
    passthrough = (kind == "chat" and not body.get("messages")) or (
        kind == "generate" and (not body.get("prompt") or body.get("raw"))
    )

    @asynccontextmanager
    async def passed(upstream: Upstream) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        if upstream.native_ollama:
            async with ollama_wire.relay(upstream, path, original, call, kind) as lines:
                yield lines
            return
        if body.get("raw"):
            raise ProxyError("raw and suffix prompts need an Ollama upstream", status=501)
        # load or unload: an OpenAI-compatible server has no such step
        await upstream.require_model(body["model"])
        yield _one(ollama_wire.load_reply(body, kind))

    @asynccontextmanager
    async def answered(upstream: Upstream) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        if upstream.native_ollama:
            sent = ollama_wire.back_to_generate(call.body, original) if kind == "generate" else call.body
            async with ollama_wire.relay(upstream, path, sent, call, kind) as lines:
                yield lines
            return
        if body.get("raw") or body.get("suffix"):
            raise ProxyError("raw and suffix prompts need an Ollama upstream", status=501)
        await upstream.require_model(call.body["model"], call.deadline(upstream))
        async with ollama_wire.translated(upstream, settings, call, kind) as lines:
            yield lines

    lines = exchange(
        request,
        services,
        call,
        "ollama",
        stream=stream,
        answer=passed if passthrough else answered,
        retrieve=not passthrough,
    )
    lines.record["api"] = "ollama"
    return Responder(
        lines.open,
        LinesFrames(kind, stream=stream),
        stream=stream,
        record=lines.record,
        extra_headers=lambda: sources_header(call),
    )


async def _one(line: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield line


@post("/api/chat", status_code=200, operation_class=documented(OLLAMA_CHAT))
async def chat(request: AnyRequest, services: NamedDependency[Services]) -> ASGIApp:
    body = await read_checked(request, lambda raw: ollama_wire.validate(raw, "chat"))
    return _lines_app(request, services, body, "chat")


@post("/api/generate", status_code=200, operation_class=documented(OLLAMA_GENERATE))
async def generate(request: AnyRequest, services: NamedDependency[Services]) -> ASGIApp:
    body = await read_checked(request, lambda raw: ollama_wire.validate(raw, "generate"))
    return _lines_app(request, services, body, "generate")


# -- embeddings ---------------------------------------------------------------------------------------------
async def _local_embedder(services: Services, model: str) -> Any:
    index = services.index
    if index is None or not index.serves_model(model):
        return None
    return await anyio.to_thread.run_sync(lambda: index.embedder)


@post("/api/embed", status_code=200, operation_class=documented(OLLAMA_EMBED))
async def embed(request: AnyRequest, services: NamedDependency[Services]) -> Any:
    pool = services.pool
    body = await read_json_object(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ProxyError("model is required", status=400)
    texts = body.get("input", [])
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ProxyError("input must be a string or an array of strings", status=400)
    check_inputs(texts)
    embedder = await _local_embedder(services, model)
    step: EmbedStep
    if embedder is not None:

        async def step(batch: list[str]) -> tuple[list[list[float]], int]:
            vectors = await anyio.to_thread.run_sync(lambda: embedder.embed_documents(batch))
            return vectors, sum(estimate_tokens(t) for t in batch)
    else:

        async def step(batch: list[str]) -> tuple[list[list[float]], int]:
            part = {"model": model, "input": batch}
            return await pool.call(model, lambda upstream: upstream.embed(part, native=body))

    vectors, tokens = await embed_in_steps(
        request, texts, step, UPSTREAM_STEP if embedder is None else LOCAL_STEP
    )
    return {
        "model": model,
        "embeddings": vectors,
        "total_duration": 0,
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }


@post("/api/embeddings", status_code=200, operation_class=documented(OLLAMA_EMBEDDINGS))
async def embeddings(request: AnyRequest, services: NamedDependency[Services]) -> Any:
    """The legacy endpoint (Open WebUI still calls it): ``prompt`` in, ``embedding`` out."""
    pool = services.pool
    body = await read_json_object(request)
    model, prompt = body.get("model"), body.get("prompt", "")
    if not isinstance(model, str) or not model:
        raise ProxyError("model is required", status=400)
    if not isinstance(prompt, str):
        raise ProxyError("prompt must be a string", status=400)
    check_inputs([prompt], param="prompt")
    embedder = await _local_embedder(services, model)
    step: EmbedStep
    if embedder is not None:

        async def step(batch: list[str]) -> tuple[list[list[float]], int]:
            return await anyio.to_thread.run_sync(lambda: embedder.embed_documents(batch)), 0
    else:

        async def step(batch: list[str]) -> tuple[list[list[float]], int]:
            vector = await pool.call(model, lambda upstream: upstream.embedding(body))
            return [vector], 0

    (vector,), _ = await embed_in_steps(request, [prompt], step, 1)
    return {"embedding": vector}


router = apis.router(apis.OLLAMA, [root, version, tags, show, ps, chat, generate, embed, embeddings, forward])
