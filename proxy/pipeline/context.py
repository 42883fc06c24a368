"""Fitting a chat into the model's real context window: learn the window, count the prompt,
drop the oldest history first and the weakest context next, and ask Ollama for a ``num_ctx``
that holds it all, so nothing is cut silently."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from proxy.errors import NotFound
from proxy.index.chunker import estimate_tokens
from proxy.logging import get_logger
from proxy.pipeline.retrieval import Passage, context_block, message_text
from proxy.settings import Settings
from proxy.upstream.client import Upstream

log = get_logger("ragproxy.context")

FALLBACK_WINDOW = 4096
WINDOW_TTL = 300.0  # seconds a learned window is trusted
# The token estimate (one per CJK character, one per four other characters) is scaled by this
# margin, and each message costs its chat-template tokens on top.
ESTIMATE_MARGIN = 1.15
MESSAGE_OVERHEAD = 6
# num_ctx comes in steps, because Ollama reloads a model whenever num_ctx changes.
NUM_CTX_STEPS = (2048, 4096, 8192, 16384, 32768, 65536, 131072)


SYSTEM_ROLES = ("system", "developer")
IMAGE_TOKENS = 768  # a fixed allowance per image: vision models spend hundreds of tokens on one


def estimate(messages: Sequence[dict[str, Any]], extra: int = 0) -> int:
    """Prompt tokens of these messages (text, tool calls, images), plus ``extra`` (the tool
    definitions), estimated on the safe side."""
    raw = extra + 3
    for message in messages:
        raw += estimate_tokens(message_text(message)) + MESSAGE_OVERHEAD
        if message.get("tool_calls"):
            raw += estimate_tokens(orjson.dumps(message["tool_calls"]).decode())
        content = message.get("content")
        if isinstance(content, list):
            raw += IMAGE_TOKENS * sum(
                1 for p in content if isinstance(p, dict) and p.get("type") == "image_url"
            )
        raw += IMAGE_TOKENS * len(message.get("images") or ())
    return int(raw * ESTIMATE_MARGIN) + 1


def tools_tokens(body: dict[str, Any]) -> int:
    tools = body.get("tools")
    return estimate_tokens(orjson.dumps(tools).decode()) if tools else 0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    window: int | None  # context length the upstream reports; None if it cannot say
    capabilities: tuple[str, ...] | None  # Ollama's /api/show capabilities; None if unknown


class WindowCache:
    """Each model's window and capabilities as the upstream reports them, cached for a few
    minutes (Ollama /api/show, llama.cpp /props)."""

    def __init__(self) -> None:
        self._infos: dict[str, tuple[float, ModelInfo]] = {}
        self.num_ctx: dict[str, int] = {}  # the largest num_ctx each model was given so far

    async def info(self, upstream: Upstream, model: str) -> ModelInfo:
        cached = self._infos.get(model)
        if cached and time.monotonic() - cached[0] < WINDOW_TTL:
            return cached[1]
        info = await _ask(upstream, model)
        if info is None:  # not cached: the next request asks again
            return ModelInfo(None, None)
        self._infos[model] = (time.monotonic(), info)
        return info

    async def window(self, upstream: Upstream, model: str) -> int | None:
        return (await self.info(upstream, model)).window


async def _ask(upstream: Upstream, model: str) -> ModelInfo | None:
    try:
        if upstream.api == "ollama":
            show = await upstream.post_json("/api/show", {"model": model})
            window = None
            for key, value in (show.get("model_info") or {}).items():
                if key.endswith(".context_length") and isinstance(value, int):
                    window = value
            capabilities = show.get("capabilities")
            return ModelInfo(window, tuple(capabilities) if isinstance(capabilities, list) else None)
        props = await upstream.get_json("/props")  # llama.cpp's server: the context of one slot
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        return ModelInfo(n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None, None)
    except NotFound:  # a server without the endpoint: a lasting answer
        return ModelInfo(None, None)
    except Exception as exc:  # down or failing: the fallback applies this time
        log.info("context.window_unknown", model=model, error=str(exc)[:200])
        return None


@dataclass
class Fitted:
    messages: list[dict[str, Any]]
    passages: list[Passage]
    window: int  # what the prompt and the answer must fit in
    reserve: int  # tokens kept for the answer
    prompt_estimate: int
    num_ctx: int | None  # set on Ollama requests
    history_dropped: int  # messages of the oldest history left out
    passages_dropped: int


def answer_reserve(body: dict[str, Any], settings: Settings) -> int:
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    for value in (
        body.get("max_completion_tokens"),
        body.get("max_tokens"),
        (options or {}).get("num_predict"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return settings.answer_tokens


def fit(
    messages: list[dict[str, Any]],
    passages: Sequence[Passage],
    *,
    window: int,
    reserve: int,
    placement: str,
    extra: int = 0,
    trim_history: bool = True,
) -> tuple[list[dict[str, Any]], list[Passage], int, int]:
    """The messages with as much context as fits: (messages, passages used, history messages
    dropped, estimate). The oldest turns go first; then the lowest-ranked passages. System
    prompts, the last user message and everything after it always stay."""
    reserve = min(reserve, window // 2)
    budget = window - reserve
    last_user = max(
        (i for i, m in enumerate(messages) if m.get("role") == "user"),
        default=max(len(messages) - 1, 0),
    )
    history = list(range(len(messages)))
    droppable = [i for i in history if i < last_user and messages[i].get("role") not in SYSTEM_ROLES]
    if not trim_history:
        droppable = []
    kept = set(history)
    dropped = 0
    while droppable and estimate([messages[i] for i in sorted(kept)], extra) > budget:
        # a turn at a time: the oldest message and any assistant/tool replies that follow it
        first = droppable.pop(0)
        kept.discard(first)
        dropped += 1
        while droppable and messages[droppable[0]].get("role") in ("assistant", "tool"):
            kept.discard(droppable.pop(0))
            dropped += 1
    base = [messages[i] for i in sorted(kept)]
    used: list[Passage] = []
    for passage in passages:
        trial = with_context(base, [*used, passage], placement)
        if estimate(trial, extra) <= budget:
            used.append(passage)
    renumbered = [_renumber(p, n) for n, p in enumerate(used, start=1)]
    final = with_context(base, renumbered, placement) if renumbered else base
    return final, renumbered, dropped, estimate(final, extra)


def _renumber(passage: Passage, number: int) -> Passage:
    return passage if passage.number == number else replace(passage, number=number)


def with_context(
    messages: list[dict[str, Any]], passages: Sequence[Passage], placement: str
) -> list[dict[str, Any]]:
    """The context as a system message (appended to the client's first system message, so
    templates that allow one system message still work), or before the last user message."""
    if not passages:
        return messages
    block = context_block(passages)
    out = list(messages)
    if placement == "user-prefix":
        for i in range(len(out) - 1, -1, -1):
            if out[i].get("role") == "user":
                out[i] = _with_text(out[i], block, before=True)
                return out
        return out
    if out and out[0].get("role") in SYSTEM_ROLES:
        out[0] = _with_text(out[0], block, before=False)
    else:
        out.insert(0, {"role": "system", "content": block})
    return out


def _with_text(message: dict[str, Any], text: str, *, before: bool) -> dict[str, Any]:
    """The message with ``text`` added before or after its own; parts (images) are kept."""
    content = message.get("content")
    if isinstance(content, list):
        part = {"type": "text", "text": text}
        return {**message, "content": [part, *content] if before else [*content, part]}
    own = content if isinstance(content, str) else ""
    return {**message, "content": f"{text}\n\n{own}" if before else f"{own}\n\n{text}"}


def num_ctx_for(needed: int, cap: int, floor: int = 0) -> int:
    """The first step that holds ``needed``, never below ``floor`` (what this model was last
    given, so a small request does not make Ollama reload it), capped by ``cap``."""
    needed = max(needed, floor)
    for step in NUM_CTX_STEPS:
        if step >= needed:
            return min(step, cap)
    return cap
