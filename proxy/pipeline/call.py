"""One chat request as the pipeline carries it (``ChatCall``): its body, what retrieval and
fitting did (``RagInfo``), what the reply reported (``ChatStats``), and the truncation check
every wire's reply ends with."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from proxy.logging import get_logger
from proxy.pipeline import context, render
from proxy.pipeline.controls import RagControl
from proxy.pipeline.passages import Passage
from proxy.upstream.client import Upstream
from proxy.upstream.pool import UpstreamPool

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
