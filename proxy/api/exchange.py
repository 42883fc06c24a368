"""One chat exchange, whichever wire a chat came in on (OpenAI chat, Responses, Anthropic
Messages, Ollama chat and generate): the request's log record, retrieval and context fitting for
its caller, the upstream the pool picks (the next one until one answers), and the reply's
statistics and sources noted when it ends. A wire adapter turns its body into an OpenAI chat
body, and the exchange's chunks into its own frames."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from litestar import Request

from proxy.api.requestlog import note_sources, request_record
from proxy.api.security import key_collections
from proxy.pipeline import clients
from proxy.pipeline.chat import ChatCall, augment, open_chat, prepare_chat
from proxy.settings import Settings
from proxy.upstream.client import Upstream

AnyRequest = Request[Any, Any, Any]
T = TypeVar("T")
Opened = Callable[[], AbstractAsyncContextManager[AsyncIterator[T]]]
Answer = Callable[[Upstream], AbstractAsyncContextManager[AsyncIterator[T]]]


@dataclasses.dataclass(frozen=True)
class Exchange:
    """A chat on its way: the call (body, retrieval, statistics), the request's log record,
    and what opens the reply's chunks (OpenAI ``chat.completion.chunk`` dicts)."""

    call: ChatCall
    record: dict[str, Any]
    open: Opened[dict[str, Any]]


def chat_exchange(
    request: AnyRequest, body: dict[str, Any], api: str, *, stream: bool, agent: bool = False
) -> Exchange:
    """For a validated OpenAI chat body. ``api``: the wire it came in on. ``agent``: an agent's
    wire (Responses, Messages), whose tools are never traded for passages and whose reasoning
    goes into items of its own, whatever the chat setting."""
    settings: Settings = request.app.state.settings
    call = prepare_chat(body)
    if agent:
        settings = dataclasses.replace(settings, reasoning_format="reasoning_content")
    record, opened = exchange(
        request, call, api, stream=stream, answer=lambda upstream: open_chat(upstream, settings, call)
    )
    return Exchange(call, record, opened)


def exchange(
    request: AnyRequest,
    call: ChatCall,
    api: str,
    *,
    stream: bool,
    answer: Answer[T],
    retrieve: bool = True,
) -> tuple[dict[str, Any], Opened[T]]:
    """The request's log record, and the opener of ``answer`` (the reply on one upstream) on the
    best upstream for the call's model, after retrieval and fitting (``retrieve``: False for
    what only loads a model)."""
    settings: Settings = request.app.state.settings
    record = request_record(request.scope)
    record.update(model=call.body["model"], stream=stream)
    if settings.log_content:
        record["messages"] = call.body["messages"]

    @asynccontextmanager
    async def opened() -> AsyncIterator[AsyncIterator[T]]:
        try:
            if retrieve:
                await augment_request(request, call, api)
                record["model"] = call.body["model"]
            async with request.app.state.pool.open(call.body["model"], answer) as chunks:
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

    return record, opened


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


def rag_headers(request: AnyRequest) -> dict[str, str]:
    return {
        name.lower(): value for name, value in request.headers.items() if name.lower().startswith("x-rag")
    }


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


def sources_header(call: ChatCall) -> list[tuple[bytes, bytes]]:
    """``X-RAGProxy-Sources``: passages sent; ``X-RAGProxy-Context``: "3/5 passages fit" when
    some that were found had no room."""
    if not call.rag.attempted:
        return []
    headers = [(b"x-ragproxy-sources", str(len(call.rag.passages)).encode())]
    if cut := call.rag.cut():
        headers.append((b"x-ragproxy-context", cut.encode()))
    return headers
