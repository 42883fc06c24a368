"""A chat call fitted into its model's window: which window (the client's num_ctx, the one the
upstream reports, or the fallback), the tools a model cannot use dropped, the history and passages
fitted by ``context.fit`` (in a worker thread: agents send thousands of messages), counted by the
upstream near the window's end, and Ollama's ``num_ctx`` chosen to hold it all."""

from __future__ import annotations

import functools
import math
from typing import Any

import anyio
import orjson

from proxy.errors import BadRequest
from proxy.logging import get_logger
from proxy.pipeline import context
from proxy.pipeline.call import ChatCall
from proxy.pipeline.passages import Passage
from proxy.settings import Settings
from proxy.upstream.client import Upstream
from proxy.upstream.pool import UpstreamPool

log = get_logger("ragproxy.chat")

ATTEMPTS = 4  # fittings of one request, each after a count over the room
# A prompt estimated over the window by more than this ratio is over it, whatever the tokenizer:
# the estimate overstates tool definitions by up to 26% and text by less (BENCHMARKS.md).
CERTAINLY_OVER = 1.3


async def fit_call(
    call: ChatCall,
    passages: list[Passage],
    pool: UpstreamPool,
    settings: Settings,
    windows: context.WindowCache,
) -> None:
    """Counts only what will be forwarded: tools a model cannot use are dropped first (Open WebUI
    sends its ~36 built-in tools with every chat, ~7,000 tokens)."""
    body, info = call.body, call.rag
    upstream = pool.preferred(body["model"])
    if body.get("tools") and body.get("tool_choice") == "none":
        drop_tools(body)  # never forwarded (the translations drop them too)
    if body.get("tools") and upstream.reports_capabilities:
        capabilities = (await windows.info(pool, body["model"], call.deadline(pool))).capabilities
        if capabilities is not None and "tools" not in capabilities:
            log.info("context.tools_dropped", model=body["model"], reason="capability")
            drop_tools(body)
            info.tools_dropped = "the model has no tools capability"
    if not body.get("tools"):
        drop_tools(body)  # tool_choice and parallel_tool_calls mean nothing without tools
    window, advice, trim_history, client_chose = await _window(call, pool, settings, windows, upstream)
    info.window = window
    info.reserve = context.answer_reserve(body, settings, window)
    fitted = await _fit_counted(call, passages, pool, windows, window, trim_history, settings, advice)
    body["messages"] = fitted.messages
    info.passages, info.history_dropped = fitted.passages, fitted.history_dropped
    if fitted.extra_dropped:
        drop_tools(body)
        info.tools_dropped = "no room beside the best passage"
        log.info("context.tools_dropped", model=body["model"], reason="window", window=window)
    if fitted.history_dropped:
        log.info("context.history_dropped", messages=fitted.history_dropped, window=window)
    if info.cut():
        log.warning(
            "context.passages_cut",
            found=info.found,
            sent=len(fitted.passages),
            window=window,
            reserve=info.reserve,
            prompt_estimate=fitted.prompt_estimate,
            shortened=fitted.shortened or None,
            advice=advice,
        )
        if not fitted.passages:
            info.no_room = advice
    if upstream.sizes_window and not client_chose:
        model = body["model"]
        info.num_ctx = context.num_ctx_for(
            info.prompt_estimate + info.reserve, window, floor=windows.num_ctx.get(model, 0)
        )
        windows.num_ctx[model] = info.num_ctx
        options = body.get("options")
        body["options"] = {**(options if isinstance(options, dict) else {}), "num_ctx": info.num_ctx}


def drop_tools(body: dict[str, Any]) -> None:
    """The tool definitions taken out, and the fields that only mean something beside them
    (stricter servers refuse ``tool_choice`` without ``tools``)."""
    for name in ("tools", "tool_choice", "parallel_tool_calls"):
        body.pop(name, None)


async def _window(
    call: ChatCall, pool: UpstreamPool, settings: Settings, windows: context.WindowCache, upstream: Upstream
) -> tuple[int, str, bool, bool]:
    """The window the prompt is fitted into; what a user would do to make it larger; whether the
    history may be cut to it (not when the window is a guess); and whether the client chose it
    (then ragproxy sets no ``num_ctx``).

    A client's ``num_ctx`` is taken on Ollama up to the model's trained context (Ollama caps a
    larger one itself). A server whose window is fixed (llama.cpp) holds what it holds, whatever
    num_ctx a client sends (aider sends its own estimate). Without one, an Ollama upstream gets
    what the prompt needs up to ``--num-ctx-max``."""
    body = call.body
    options = body.get("options") if isinstance(body.get("options"), dict) else None
    asked = (options or {}).get("num_ctx", body.get("num_ctx"))
    if not (isinstance(asked, int) and not isinstance(asked, bool) and asked > 0):
        asked = None
    learned: int | None
    if settings.context_window:
        learned = settings.context_window
        advice = f"raise ragproxy's --context-window (now {learned}) if the model holds more"
    else:
        learned = await windows.window(pool, body["model"], call.deadline(pool))
        advice = upstream.window_advice.format(window=learned)
    if asked is not None and upstream.sizes_window:
        if learned is None or asked <= learned:
            return asked, f"raise num_ctx in the client's settings (now {asked})", True, True
        return learned, advice, True, True
    if learned is None:  # a window nobody reported is a guess: passages fit it, the history is not cut
        guess = asked or context.FALLBACK_WINDOW  # a client's num_ctx guesses better than 4096
        return guess, "set ragproxy's --context-window (the server reports none)", False, False
    if upstream.sizes_window and settings.num_ctx_max < learned:
        cap = settings.num_ctx_max
        return cap, f"raise ragproxy's --num-ctx-max (now {cap})", True, False
    return learned, advice, True, False


async def _fit_counted(
    call: ChatCall,
    passages: list[Passage],
    pool: UpstreamPool,
    windows: context.WindowCache,
    window: int,
    trim_history: bool,
    settings: Settings,
    advice: str,
) -> context.Fitted:
    """``context.fit`` into the room the answer's reserve leaves, the estimate scaled for the
    model. A prompt that could pass the room is counted by the upstream where it can count
    (llama.cpp, which refuses a prompt over its window): a count over the room scales this
    request's estimate by what was counted (and teaches the model's scale), and the prompt is
    fitted again. ``call.rag.prompt_estimate``: the count, else the scaled estimate."""
    body, info, model = call.body, call.rag, call.body["model"]
    room = window - info.reserve
    in_use = any(m.get("role") == "tool" or m.get("tool_calls") for m in body["messages"])
    tools = await anyio.to_thread.run_sync(context.tools_tokens, body) if body.get("tools") else 0
    scale = windows.scale(model)

    def fitted_and_sent(scale: float) -> tuple[context.Fitted, dict[str, Any], int]:
        """The fitting, what would be sent, and its UTF-8 length (each a pass over everything
        the client sent: in a worker thread)."""
        fitted = context.fit(
            body["messages"],
            passages,
            window=int(room / scale),  # the room measured in unscaled estimate tokens
            reserve=0,
            placement=settings.context_placement,
            extra=tools,
            trim_history=trim_history,
            extra_droppable=call.tools_give_way and not in_use,  # tools in use are never taken away
        )
        sent: dict[str, Any] = {"messages": fitted.messages}
        if body.get("tools") and not fitted.extra_dropped:
            sent["tools"] = body["tools"]
        return fitted, sent, len(orjson.dumps(sent))

    for _ in range(ATTEMPTS):
        info.scale, counted = scale, None
        fitted, sent, size = await anyio.to_thread.run_sync(functools.partial(fitted_and_sent, scale))
        info.estimated = fitted.prompt_estimate
        info.prompt_estimate = math.ceil(fitted.prompt_estimate * scale)
        if not windows.worth_counting(size, room):
            break
        real = await windows.count(pool, model, sent, call.deadline(pool))
        if real is None:
            break
        windows.learn(model, real, fitted.prompt_estimate)
        counted, scaled, info.prompt_estimate = real, info.prompt_estimate, real
        if real <= room:
            break
        log.info("context.counted_over", model=model, counted=real, room=room, estimate=scaled)
        if scale >= context.MAX_REQUEST_SCALE:
            break  # nothing more to drop by
        scale = min(
            max(real / fitted.prompt_estimate * context.SCALE_HEADROOM, scale * 1.1),
            context.MAX_REQUEST_SCALE,
        )
    if counted is not None and counted > window:
        # Counted by the upstream, after everything that may go has gone: it would refuse it.
        raise _too_long(f"{counted} tokens (as the model server counts them)", window, advice)
    if counted is None and trim_history and info.prompt_estimate > window * CERTAINLY_OVER:
        # Not counted (Ollama cannot), but over by more than the estimate ever overstates: Ollama
        # would cut it without a word (the tool definitions first), a fixed window refuse it.
        raise _too_long(f"about {info.prompt_estimate} tokens (as ragproxy estimates them)", window, advice)
    return fitted


def _too_long(size: str, window: int, advice: str) -> BadRequest:
    return BadRequest(
        f"the prompt takes {size} with all the history it could do without left out, more "
        f"than the model's {window}-token window: shorten the system prompt, the tool "
        f"definitions or the last message, or {advice}",
        param="messages",
        code="context_length_exceeded",
    )
