"""One chat completion: the request made ready for the upstream, the reply as OpenAI chunks."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from proxy.errors import BadRequest, Forbidden
from proxy.index.service import IndexService
from proxy.logging import get_logger
from proxy.pipeline import context, controls, conversation, links, render, retrieval
from proxy.pipeline.controls import RagControl
from proxy.pipeline.fitting import fit_call
from proxy.pipeline.passages import Passage
from proxy.settings import Settings
from proxy.types import Reranker
from proxy.upstream.client import Upstream
from proxy.upstream.pool import UpstreamPool
from proxy.upstream.reasoning import ReasoningRenderer, strip_reasoning_from_history

log = get_logger("ragproxy.chat")


@dataclass
class ChatStats:
    """Filled in as the reply streams; read by the request log."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    upstream_wait_ms: float | None = None  # from sending upstream to its first body bytes
    upstream: str | None = None  # the base URL of the upstream asked (the last one, after a failover)
    truncated: bool = False


@dataclass
class RagInfo:
    """What retrieval and context fitting did for one request."""

    control: RagControl = field(default_factory=lambda: RagControl(False, reason="not applied"))
    attempted: bool = False  # retrieval ran (so the reply carries ``sources``, maybe empty)
    skipped: str | None = None  # why retrieval did not run
    query: str = ""
    passages: list[Passage] = field(default_factory=list)
    found: int = 0  # passages found before fitting
    gated: int = 0  # chunks found but left out as unrelated to the question
    retrieval_ms: float | None = None
    window: int | None = None
    reserve: int = 0
    prompt_estimate: int = 0  # the prompt's tokens as counted by the upstream, else as estimated
    estimated: int = 0  # the prompt's estimate before the model's scale
    scale: float = 1.0  # what the estimate was scaled by for the model (WindowCache.scale)
    num_ctx: int | None = None
    history_dropped: int = 0
    tools_dropped: str | None = None  # why the request's tool definitions were not forwarded
    # Passages were found but the window had room for none: what would make room (the setting to
    # change), told to the user once in the reply.
    no_room: str | None = None
    no_room_told: bool = False  # an earlier reply of this conversation carried that note
    footnote: bool = False
    events: bool = False  # sources as Open WebUI's source events on the stream's first chunks

    def sources(self) -> list[dict[str, Any]]:
        return [passage.source() for passage in self.passages]

    def tail(self) -> str:
        """What the reply's text ends with: the sources footnote, and the note that passages
        were found but had no room (once in a conversation)."""
        text = render.footnote(self.passages) if self.footnote and self.passages else ""
        if self.no_room and not self.no_room_told and self.window:
            text += render.no_room_note(self.found, self.window, self.no_room)
        return text

    def cut(self) -> str | None:
        """The note "3/5 passages fit" when passages were found but not all could be sent."""
        if self.found > len(self.passages):
            return f"{len(self.passages)}/{self.found} passages fit"
        return None

    def summary(self) -> dict[str, Any]:
        """What a reply carries beside ``sources``: how many passages were found and sent."""
        out: dict[str, Any] = {"found": self.found, "sent": len(self.passages), "gated": self.gated}
        if self.cut():
            out["cut"] = "window"
        if self.tools_dropped:
            out["tools_dropped"] = self.tools_dropped
        if self.no_room:
            out["no_room"] = self.no_room
        return out

    def fields(self) -> dict[str, Any]:
        """The fields a reply carries when retrieval ran: ``sources`` and ``rag``."""
        return {"sources": self.sources(), "rag": self.summary()} if self.attempted else {}

    def record(self) -> dict[str, Any]:
        return {
            "rag": self.attempted,
            "rag_skipped": self.skipped,
            "rag_chunks": sum(len(p.chunk_ids) for p in self.passages),
            "rag_found": self.found if self.attempted else None,
            "rag_gated": self.gated if self.attempted else None,
            "rag_sources": len(self.passages),
            "rag_cut": self.cut(),
            "tools_dropped": self.tools_dropped,
            "retrieval_ms": self.retrieval_ms,
            "context_window": self.window,
            "prompt_estimate": self.prompt_estimate,
            "num_ctx": self.num_ctx,
            "history_dropped": self.history_dropped,
        }


@dataclass
class ChatCall:
    body: dict[str, Any]
    include_usage: bool
    stats: ChatStats = field(default_factory=ChatStats)
    rag: RagInfo = field(default_factory=RagInfo)
    # When the request arrived (time.monotonic()): its one first_byte_timeout counts from here,
    # shared by the window probe and the wait for the reply's first byte.
    arrived: float = field(default_factory=time.monotonic)
    # A chat UI's built-in tools, which the conversation may never use, give way to the best
    # passage when both cannot fit. An agent's tools are its hands: passages give way to them.
    tools_give_way: bool = False
    # Where the model's scale is learned from the prompt tokens the reply reports (set by augment).
    windows: context.WindowCache | None = None

    def deadline(self, upstream: Upstream | UpstreamPool) -> float:
        return upstream.first_byte_deadline(self.arrived)

    def counted(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        """The token counts the upstream reported for the reply, noted, and the prompt's checked
        against the window (``check_truncation``). Every wire's reply ends here."""
        self.stats.prompt_tokens, self.stats.completion_tokens = prompt_tokens, completion_tokens
        check_truncation(self)

    def closing_text(self, finish_reason: str | None) -> str:
        """What the answer's text ends with: the sources footnote (if it is on), unless the turn
        is tool calls (not the answer yet) or only loaded or unloaded a model."""
        return "" if finish_reason in ("tool_calls", "load", "unload") else self.rag.tail()


def prepare_chat(body: dict[str, Any]) -> ChatCall:
    """``body`` is a validated OpenAI chat body with its model resolved."""
    stream_options = body.get("stream_options")
    include_usage = bool(
        body.get("stream") and isinstance(stream_options, dict) and stream_options.get("include_usage")
    )
    body = {**body, "messages": strip_reasoning_from_history(body["messages"])}
    return ChatCall(body=body, include_usage=include_usage)


async def augment(
    call: ChatCall,
    *,
    headers: dict[str, str],
    index: IndexService | None,
    pool: UpstreamPool,
    settings: Settings,
    windows: context.WindowCache,
    footnote_default: bool,
    source_events: bool = False,
    reranker: Reranker | None = None,
    allowed: tuple[str, ...] | None = None,
) -> None:
    """Retrieval and context fitting, in place on ``call.body``: the model alias resolved, the
    ``rag`` field removed, the context added, the oldest history dropped if the window needs it,
    and Ollama's ``num_ctx`` set (as the upstream the model goes to first speaks). ``allowed``:
    the only collections the caller's key may read (None: all); the search filters on them in SQL."""
    body, info = call.body, call.rag
    call.windows = windows
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
    info.control = control = controls.resolve_control(body.pop("rag", None), headers, alias, settings)
    info.footnote = control.footnote if control.footnote is not None else footnote_default
    info.events = source_events
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
                reranker=reranker,
            )
        )
        passages, info.gated = retrieved.passages, retrieved.gated
        if settings.strip_links:
            passages = [
                dataclasses.replace(p, text=links.strip_links(p.text, settings.link_hosts)) for p in passages
            ]
        info.retrieval_ms = round((time.perf_counter() - started) * 1000, 2)
        info.found = len(passages)
    await fit_call(call, passages, pool, settings, windows)


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


def check_truncation(call: ChatCall) -> None:
    """Ollama cuts a prompt longer than num_ctx without an error: a prompt that filled the
    window, or outgrew the estimate, is logged. The count teaches the model's scale."""
    prompt, rag = call.stats.prompt_tokens, call.rag
    if prompt is None or not rag.prompt_estimate:
        return
    if call.windows is not None:
        call.windows.learn(call.body["model"], prompt, rag.estimated)
    limit = rag.num_ctx or rag.window
    if limit and prompt >= limit - 1:
        log.warning("context.truncated", prompt_tokens=prompt, num_ctx=limit, estimate=rag.prompt_estimate)
        call.stats.truncated = True
    elif prompt > rag.prompt_estimate:
        log.warning("context.estimate_low", prompt_tokens=prompt, estimate=rag.prompt_estimate)
