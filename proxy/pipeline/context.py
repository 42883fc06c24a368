"""Fitting a chat into the model's real context window: learn the window, count the prompt,
drop the oldest history first and the weakest context next, and ask Ollama for a ``num_ctx``
that holds it all, so nothing is cut silently."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

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


def estimate(messages: Sequence[dict[str, Any]]) -> int:
    """Prompt tokens of these messages, estimated on the safe side."""
    raw = sum(estimate_tokens(message_text(m)) + MESSAGE_OVERHEAD for m in messages) + 3
    return int(raw * ESTIMATE_MARGIN) + 1


@dataclass(frozen=True, slots=True)
class ModelInfo:
    window: int | None  # context length the upstream reports; None if it cannot say
    capabilities: tuple[str, ...] | None  # Ollama's /api/show capabilities; None if unknown


class WindowCache:
    """Each model's window and capabilities as the upstream reports them, cached for a few
    minutes (Ollama /api/show, llama.cpp /props)."""

    def __init__(self) -> None:
        self._infos: dict[str, tuple[float, ModelInfo]] = {}

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
) -> tuple[list[dict[str, Any]], list[Passage], int, int]:
    """The messages with as much context as fits: (messages, passages used, history messages
    dropped, estimate). The oldest turns go first; then the lowest-ranked passages."""
    reserve = min(reserve, window // 2)
    budget = window - reserve
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages))
    history = list(range(len(messages)))
    droppable = [i for i in history if i < last_user and messages[i].get("role") != "system"]
    kept = set(history)
    dropped = 0
    while droppable and estimate([messages[i] for i in sorted(kept)]) > budget:
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
        if estimate(trial) <= budget:
            used.append(passage)
    renumbered = [_renumber(p, n) for n, p in enumerate(used, start=1)]
    final = with_context(base, renumbered, placement) if renumbered else base
    return final, renumbered, dropped, estimate(final)


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
                out[i] = {**out[i], "content": f"{block}\n\n{message_text(out[i])}"}
                return out
        return out
    if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
        out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{block}"}
    else:
        out.insert(0, {"role": "system", "content": block})
    return out


def num_ctx_for(needed: int, cap: int) -> int:
    for step in NUM_CTX_STEPS:
        if step >= needed:
            return min(step, cap)
    return cap
