"""One chat exchange, whichever wire a chat came in on (OpenAI chat, Responses, Anthropic
Messages, Ollama chat and generate): the request's log record, retrieval and context fitting for
its caller, the upstream the pool picks (the next one until one answers), and the reply's
statistics and sources noted when it ends. A wire adapter turns its body into an OpenAI chat
body, and the exchange's chunks into its own frames."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from litestar import Request

from proxy.api.requestlog import note_sources, request_record
from proxy.api.responders import OpenChunks
from proxy.api.security import key_collections
from proxy.pipeline.call import ChatCall
from proxy.pipeline.chat import augment, open_chat, prepare_chat
from proxy.pipeline.services import Caller, Services
from proxy.upstream.client import Upstream

AnyRequest = Request[Any, Any, Any]
Chunks = AsyncIterator[dict[str, Any]]
Answer = Callable[[Upstream], AbstractAsyncContextManager[Chunks]]


@dataclasses.dataclass(frozen=True)
class Exchange:
    """A chat on its way: the call (body, retrieval, statistics), the request's log record,
    and what opens the reply's chunks (OpenAI ``chat.completion.chunk`` dicts, or the lines of
    the Ollama wire)."""

    call: ChatCall
    record: dict[str, Any]
    open: OpenChunks


def chat_exchange(
    request: AnyRequest,
    services: Services,
    body: dict[str, Any],
    api: str,
    *,
    stream: bool,
    agent: bool = False,
) -> Exchange:
    """For a validated OpenAI chat body. ``api``: the wire it came in on. ``agent``: an agent's
    wire (Responses, Messages), whose tools are never traded for passages and whose reasoning
    goes into items of its own, whatever the chat setting."""
    settings = services.settings
    call = prepare_chat(body)
    if agent:
        settings = dataclasses.replace(settings, reasoning_format="reasoning_content")
    return exchange(
        request,
        services,
        call,
        api,
        stream=stream,
        answer=lambda upstream: open_chat(upstream, settings, call),
        logged=body["messages"],  # as the client sent them
    )


def exchange(
    request: AnyRequest,
    services: Services,
    call: ChatCall,
    api: str,
    *,
    stream: bool,
    answer: Answer,
    retrieve: bool = True,
    logged: list[dict[str, Any]] | None = None,
) -> Exchange:
    """The call with the request's log record, and the opener of ``answer`` (the reply on one
    upstream) on the best upstream for the call's model, after retrieval and fitting (``retrieve``: False for
    what only loads a model). ``logged``: the messages the log shows with ``log_content`` (the
    call's, if None)."""
    record = request_record(request.scope)
    record.update(model=call.body["model"], stream=stream)
    if services.settings.log_content:
        record["messages"] = call.body["messages"] if logged is None else logged

    @asynccontextmanager
    async def opened() -> AsyncIterator[Chunks]:
        try:
            if retrieve:
                await augment(call, caller(request, api), services)
                record["model"] = call.body["model"]
            async with services.pool.open(call.body["model"], answer) as chunks:
                yield chunks
        finally:
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
            note_sources(request.scope, call.rag.sources())

    return Exchange(call, record, opened)


def caller(request: AnyRequest, api: str) -> Caller:
    """Who sent this request: the API it came in on, its client, ``X-RAG-*`` headers and key."""
    headers = {
        name.lower(): value for name, value in request.headers.items() if name.lower().startswith("x-rag")
    }
    return Caller(
        api=api,
        client=client_kind(request.headers.get("user-agent", "")),
        headers=headers,
        allowed=key_collections(request.scope),
    )


def client_kind(user_agent: str) -> str:
    """ "open-webui" (its aiohttp session sends aiohttp's own User-Agent), or "other"."""
    return "open-webui" if "aiohttp/" in user_agent else "other"


def sources_header(call: ChatCall) -> list[tuple[bytes, bytes]]:
    """``X-RAGProxy-Sources``: passages sent; ``X-RAGProxy-Context``: "3/5 passages fit" when
    some that were found had no room."""
    if not call.rag.attempted:
        return []
    headers = [(b"x-ragproxy-sources", str(len(call.rag.passages)).encode())]
    if cut := call.rag.cut():
        headers.append((b"x-ragproxy-context", cut.encode()))
    return headers
