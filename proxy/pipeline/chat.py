"""One chat completion: the request made ready for the upstream, the reply as OpenAI chunks."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from proxy.errors import BadRequest, Forbidden
from proxy.index.service import IndexService
from proxy.logging import get_logger
from proxy.pipeline import clients, controls, conversation, links, render, retrieval
from proxy.pipeline.call import ChatCall, ChatStats
from proxy.pipeline.fitting import fit_call
from proxy.pipeline.passages import Passage
from proxy.pipeline.services import Caller, Services
from proxy.settings import Settings
from proxy.upstream.client import Upstream
from proxy.upstream.reasoning import ReasoningRenderer, strip_reasoning_from_history

log = get_logger("ragproxy.chat")


def prepare_chat(body: dict[str, Any]) -> ChatCall:
    """``body`` is a validated OpenAI chat body with its model resolved."""
    stream_options = body.get("stream_options")
    include_usage = bool(
        body.get("stream") and isinstance(stream_options, dict) and stream_options.get("include_usage")
    )
    body = {**body, "messages": strip_reasoning_from_history(body["messages"])}
    return ChatCall(body=body, include_usage=include_usage)


async def augment(call: ChatCall, caller: Caller, services: Services) -> None:
    """Retrieval and context fitting, in place on ``call.body``: the model alias resolved, the
    ``rag`` field removed, the context added, the oldest history dropped if the window needs it,
    and the window set where the upstream the model goes to first takes it per request.
    ``caller.allowed``: the only collections the caller's key may read (None: all); the search
    filters on them in SQL."""
    body, info = call.body, call.rag
    index, settings, allowed = services.index, services.settings, caller.allowed
    call.windows = services.windows
    # Only a chat UI's own tools give way to passages; an agent's never do (on any wire).
    call.tools_give_way = caller.api in ("openai", "ollama") and (
        caller.client == "open-webui" or clients.chat_ui_builtins(body.get("tools"))
    )
    collections = visible_collections(index, allowed)
    model, alias = controls.split_alias(body["model"], collections)
    if index is not None and index.serves_model(model):
        raise BadRequest(
            f"'{model}' is the index's embedding model: it makes embeddings (/v1/embeddings, "
            "/api/embed), not chat replies; choose a chat model",
            param="model",
            code="model_not_chat",
        )
    body["model"] = model
    info.control = control = controls.resolve_control(
        body.pop("rag", None), caller.headers or {}, alias, settings
    )
    info.footnote = control.footnote if control.footnote is not None else caller.footnote_default(settings)
    info.events = caller.chat_ui
    # ragproxy's own footnotes and context blocks, echoed back by the client, are not the user's
    # Work over every message (thousands, from agents) runs in a thread: the loop keeps serving.
    info.no_room_told, body["messages"] = await anyio.to_thread.run_sync(_own_additions, body["messages"])
    messages: list[dict[str, Any]] = body["messages"]
    if index is None:
        info.skipped = "no index"
    elif not control.enabled:
        info.skipped = f"off ({control.reason})"
    elif (kind := conversation.housekeeping(messages, body)) is not None:
        info.skipped = kind
    passages: list[Passage] = []
    if info.skipped is None and index is not None:
        check_collections(control.collections or (), allowed, collections, param="rag.collections")
        info.attempted = True
        queries = conversation.search_queries(messages)
        info.query = conversation.search_query(messages)
        started = time.perf_counter()
        retrieved = await anyio.to_thread.run_sync(
            lambda: retrieval.retrieve(
                index,
                queries,
                top_k=control.top_k,
                collections=control.collections or allowed,
                min_score=settings.min_score if settings.min_score >= 0 else None,
                reranker=services.reranker,
            )
        )
        passages, info.gated = retrieved.passages, retrieved.gated
        if settings.strip_links:
            passages = [
                dataclasses.replace(p, text=links.strip_links(p.text, settings.link_hosts)) for p in passages
            ]
        info.retrieval_ms = round((time.perf_counter() - started) * 1000, 2)
        info.found = len(passages)
    await fit_call(call, passages, services.pool, settings, services.windows)


def _own_additions(messages: list[dict[str, Any]]) -> tuple[bool, list[dict[str, Any]]]:
    """Whether the no-room note was told already, and the messages without ragproxy's additions."""
    return conversation.told_no_room(messages), conversation.strip_own_additions(messages)


def check_collections(
    requested: Sequence[str], allowed: tuple[str, ...] | None, visible: Sequence[str], *, param: str
) -> None:
    """403 for a collection the caller's key may not read, 400 for one the index lacks (naming
    only the collections the caller may see)."""
    forbidden = [c for c in requested if allowed is not None and c not in allowed]
    if forbidden:
        raise Forbidden(f"this API key may not read collection {', '.join(map(repr, forbidden))}")
    unknown = [c for c in requested if c not in visible]
    if unknown:
        raise BadRequest(
            f"unknown collection {', '.join(map(repr, unknown))}; "
            f"the index has {', '.join(visible) or 'none'}",
            param=param,
        )


def visible_collections(index: IndexService | None, allowed: tuple[str, ...] | None) -> list[str]:
    """The index's collections this caller may see."""
    if index is None:
        return []
    names = sorted(index.store.collections())
    return names if allowed is None else [name for name in names if name in allowed]


@asynccontextmanager
async def open_chat(
    upstream: Upstream, settings: Settings, call: ChatCall
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """Chunks of the reply, reasoning rendered as the settings say. Errors before the upstream
    answers raise here; later ones raise from the iterator."""
    split = settings.reasoning_format != "inline"
    path, request = upstream.chat_request(call.body)
    call.stats.upstream, sent = upstream.base, time.perf_counter()
    async with upstream.stream(path, request, deadline=call.deadline(upstream)) as raw:
        chunks = upstream.chat_chunks(timed_first(raw, sent, call.stats), call.body["model"], split)
        yield _rendered(chunks, settings, call)


async def timed_first(raw: AsyncIterator[bytes], sent: float, stats: ChatStats) -> AsyncIterator[bytes]:
    """The upstream's bytes, noting how long after ``sent`` (``time.perf_counter()``) the first came."""
    async for chunk in raw:
        if stats.upstream_wait_ms is None:
            stats.upstream_wait_ms = round((time.perf_counter() - sent) * 1000, 2)
        yield chunk


async def _rendered(
    chunks: AsyncIterator[dict[str, Any]], settings: Settings, call: ChatCall
) -> AsyncIterator[dict[str, Any]]:
    """The chunks with reasoning rendered, Open WebUI's source events on the first ones (if
    asked), the sources footnote before each choice's finish, and ``sources`` on the last chunk
    (the usage chunk if the client asked for one). Each chunk carries one choice."""
    renderers: dict[int, ReasoningRenderer] = {}  # by choice index (``n`` above 1)
    rag = call.rag
    events = render.source_events(rag.passages) if rag.events else []
    async for chunk in chunks:
        choices = chunk.get("choices")
        if not choices:
            usage = chunk.get("usage") or {}
            call.counted(usage.get("prompt_tokens"), usage.get("completion_tokens"))
            if call.include_usage:
                yield {**chunk, **rag.fields()}
            continue
        choice = choices[0]
        index = choice.get("index", 0)
        renderer = renderers.setdefault(index, ReasoningRenderer(settings.reasoning_format))
        if choice.get("finish_reason"):
            for carrier in _event_carriers(chunk, events):
                yield carrier
            events = []
            if index == 0 or call.stats.finish_reason is None:
                call.stats.finish_reason = choice["finish_reason"]
            tail = renderer.close() + call.closing_text(choice["finish_reason"])
            if tail:
                tail_choice = {"index": index, "delta": {"content": tail}, "finish_reason": None}
                yield {**chunk, "choices": [tail_choice]}
            if not call.include_usage:
                chunk = {**chunk, **rag.fields()}
        else:
            renderer.render(choice["delta"])
        if events:  # the first chunk keeps its role and carries the first event
            yield {**chunk, "event": events[0]}
            for carrier in _event_carriers(chunk, events[1:]):
                yield carrier
            events = []
            continue
        yield chunk


def _event_carriers(chunk: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One empty-delta chunk per source event: Open WebUI takes one source per event and numbers
    them in order, so its chips match the [n] the model cites."""
    empty = {key: value for key, value in chunk.items() if key not in ("choices", "usage", "sources", "rag")}
    return [
        {**empty, "choices": [{"index": 0, "delta": {}, "finish_reason": None}], "event": e} for e in events
    ]
