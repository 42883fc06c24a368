"""Fitting a chat into the model's real context window: learn the window, count the prompt,
drop the oldest history first and the weakest context next, and ask Ollama for a ``num_ctx``
that holds it all, so nothing is cut silently."""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from proxy.errors import BadRequest, NotFound
from proxy.logging import get_logger
from proxy.pipeline.clients import SYSTEM_ROLES
from proxy.pipeline.conversation import message_text
from proxy.pipeline.passages import Passage
from proxy.pipeline.render import context_block
from proxy.settings import Settings
from proxy.text import estimate_tokens
from proxy.upstream.client import UNKNOWN, ModelInfo
from proxy.upstream.pool import UpstreamPool

log = get_logger("ragproxy.context")

FALLBACK_WINDOW = 4096
WINDOW_TTL = 300.0  # seconds a learned window is trusted
FAILED_PROBE_TTL = 30.0  # seconds the fallback is used after a probe failed, before asking again
# A window probe waits at most this long, and at most this share of what is left of the request's
# first-byte budget, so the chat keeps the rest. A healthy server answers in milliseconds (Ollama
# reads /api/show from the model's file, without loading the model).
PROBE_TIMEOUT = 10.0
PROBE_SHARE = 0.25
# The token estimate (proxy.text: priced by script, already on the safe side for Qwen 2 and
# Llama 3) is scaled by this margin, and each message costs its chat-template tokens on top. A
# model whose tokenizer counts more gets its own scale (``WindowCache.scale``).
ESTIMATE_MARGIN = 1.0
MESSAGE_OVERHEAD = 6
# A prompt that could pass the room is counted by the upstream itself where it can (llama.cpp's
# /tokenize), within a small part of the first-byte budget: one whose UTF-8 form is longer than
# the room (no tokenizer spends more than a token a byte, so a shorter one cannot pass it). A model
# whose tokenizer counts more than the estimate (learned from those counts and from the prompt
# tokens every reply reports) gets its estimates scaled up by the most of its RECENT last ratios,
# with some headroom and at most by MAX_SCALE: one odd prompt (a script the estimate prices low)
# raises it for a few requests, not for good. Within one request a count over the room scales
# that request's fitting by what was counted, up to MAX_REQUEST_SCALE.
COUNT_TIMEOUT = 2.0
LEARN_FROM = 128  # prompts shorter than this say more about the chat template than the tokenizer
SCALE_HEADROOM = 1.05
MAX_SCALE = 4.0
MAX_REQUEST_SCALE = 16.0
RECENT = 8
# num_ctx comes in steps, because Ollama reloads a model whenever num_ctx changes.
NUM_CTX_STEPS = (2048, 4096, 8192, 16384, 32768, 65536, 131072)


# Tool definitions (``tools_tokens``), set with bench/tool_tokens.py against Claude Code's, Codex's
# and Open WebUI's tools rendered by Qwen 2.5's, Llama 3.1's and llama.cpp's DeepSeek-R1 templates:
# the JSON's estimate undercounts indented renderings of many short parameters (Open WebUI's on
# Llama 3.1: 0.95) and misses the instructions around the list (~50-100 tokens).
TOOLS_MARGIN = 1.04
TOOL_OVERHEAD = 8
TOOLS_PREAMBLE = 100

IMAGE_TOKENS = 768  # a fixed allowance per image: vision models spend hundreds of tokens on one


def _raw(message: dict[str, Any]) -> int:
    """One message's share of ``estimate`` before the margin."""
    raw = estimate_tokens(message_text(message)) + MESSAGE_OVERHEAD
    if message.get("tool_calls"):
        raw += estimate_tokens(orjson.dumps(message["tool_calls"]).decode())
    content = message.get("content")
    if isinstance(content, list):
        raw += IMAGE_TOKENS * sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
    return raw + IMAGE_TOKENS * len(message.get("images") or ())


def estimate(messages: Sequence[dict[str, Any]], extra: int = 0) -> int:
    """Prompt tokens of these messages (text, tool calls, images), plus ``extra`` (the tool
    definitions), estimated on the safe side."""
    return _with_margin(extra + 3 + sum(_raw(message) for message in messages))


def _with_margin(raw: int) -> int:
    return int(raw * ESTIMATE_MARGIN) + 1


def tools_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of the tool definitions as a chat template renders them, on the safe side:
    the JSON priced as text, with TOOLS_MARGIN for what the templates add to it (spaces after the
    separators, Llama 3.1's and llama.cpp's DeepSeek-R1's indentation), TOOL_OVERHEAD a tool and
    TOOLS_PREAMBLE once for their instructions (measured in BENCHMARKS.md,
    ``bench/tool_tokens.py``)."""
    tools = body.get("tools")
    if not tools:
        return 0
    count = len(tools) if isinstance(tools, list) else 1
    raw = estimate_tokens(orjson.dumps(tools).decode())
    return int(raw * TOOLS_MARGIN) + TOOL_OVERHEAD * count + TOOLS_PREAMBLE


class WindowCache:
    """Each model's window and capabilities as the upstream reports them, cached for a few
    minutes (Ollama /api/show, llama.cpp /props). A probe that failed is remembered briefly, so
    the chats that follow use the fallback at once instead of each waiting on it again."""

    def __init__(self) -> None:
        self._infos: dict[str, tuple[float, ModelInfo]] = {}  # model: (until, info)
        self.num_ctx: dict[str, int] = {}  # the largest num_ctx each model was given so far
        self._uncounted: dict[str, float] = {}  # model: until when its upstream is not asked to count
        self._ratios: dict[str, collections.deque[float]] = {}  # model: its last counted/estimated

    async def info(self, pool: UpstreamPool, model: str, deadline: float | None = None) -> ModelInfo:
        """Asked of an upstream that has the model. ``deadline``: the request's first-byte
        deadline, which the probe shares with the chat (``Upstream.first_byte_deadline``); the
        probe takes at most a small part of what is left."""
        cached = self._infos.get(model)
        now = time.monotonic()
        if cached and now < cached[0]:
            return cached[1]
        left = (pool.first_byte_deadline() if deadline is None else deadline) - now
        if left <= 0:  # no time to ask: the chat reports the timeout
            return UNKNOWN
        try:
            until = now + min(PROBE_TIMEOUT, left * PROBE_SHARE)
            info, ttl = await pool.call(model, lambda upstream: upstream.model_info(model, until)), WINDOW_TTL
        except NotFound:  # a server without the endpoint (or Ollama's unknown model): lasting
            info, ttl = UNKNOWN, WINDOW_TTL
        except Exception as exc:  # down, silent or failing: the fallback applies for a while
            info, ttl = UNKNOWN, FAILED_PROBE_TTL
            log.warning(
                "context.window_probe_failed",
                model=model,
                error=str(exc)[:200],
                window=pool.settings.context_window or FALLBACK_WINDOW,
                retry_in_s=FAILED_PROBE_TTL,
            )
        self._infos[model] = (time.monotonic() + ttl, info)
        return info

    async def window(self, pool: UpstreamPool, model: str, deadline: float | None = None) -> int | None:
        return (await self.info(pool, model, deadline)).window

    def scale(self, model: str) -> float:
        """What ``estimate`` is multiplied by for this model: 1, or more while its tokenizer was
        recently seen to count more."""
        recent = self._ratios.get(model)
        return max(1.0, *recent) if recent else 1.0

    def learn(self, model: str, real: int, estimated: float) -> None:
        """A real prompt count beside the unscaled estimate of the same prompt. A lower count
        only ages a higher one out (Ollama reports only the tokens it did not have cached, and
        a cut prompt as the window's length)."""
        if real < LEARN_FROM or estimated <= 0:
            return
        before = self.scale(model)
        ratios = self._ratios.setdefault(model, collections.deque(maxlen=RECENT))
        ratios.append(min(real / estimated * SCALE_HEADROOM, MAX_SCALE))
        if self.scale(model) != before:
            log.info("context.scale_learned", model=model, scale=round(self.scale(model), 3), was=before)

    @staticmethod
    def worth_counting(prompt_bytes: int, room: int) -> bool:
        """Whether a prompt should be counted before it is sent: it could pass the room."""
        return prompt_bytes > room

    async def count(
        self, pool: UpstreamPool, model: str, body: dict[str, Any], deadline: float
    ) -> int | None:
        """The prompt tokens of this chat body as the upstream the model goes to counts them;
        None if it cannot count (then it is not asked again for a while) or not in time."""
        now = time.monotonic()
        if now < self._uncounted.get(model, 0.0) or deadline <= now:
            return None
        until = now + min(COUNT_TIMEOUT, (deadline - now) * PROBE_SHARE)
        try:
            return await pool.preferred(model).count_prompt(body, deadline=until)
        except Exception as exc:  # no such endpoint, down, slow: the estimate decides
            retry = WINDOW_TTL if isinstance(exc, NotFound | BadRequest) else FAILED_PROBE_TTL
            self._uncounted[model] = time.monotonic() + retry
            log.info("context.count_failed", model=model, error=str(exc)[:200], retry_in_s=retry)
            return None


# Passages may take this share of the room the required messages leave before older history
# gets any; the best passage always gets in, whatever its size (shortened as a last resort).
PASSAGE_SHARE = 0.6
MIN_PASSAGE_TOKENS = 48  # a passage cut shorter than this would not say anything


@dataclass
class Fitted:
    messages: list[dict[str, Any]]
    passages: list[Passage]  # renumbered 1..n in rank order
    history_dropped: int  # messages of the oldest history left out
    prompt_estimate: int
    extra_dropped: bool = False  # the tool definitions had to go to make room for the best passage
    shortened: bool = False  # the best passage was cut to fit


def answer_reserve(body: dict[str, Any], settings: Settings, window: int) -> int:
    """The tokens kept free for the answer: what the client allows it (``max_tokens``), else
    ``--answer-tokens``, but no more than a quarter of the window (or ``--answer-tokens``, if
    larger) and never more than half. A client's limit is a ceiling, not a length: agents ask for
    32,000 whatever the model, and the window is better spent on the prompt and its passages."""
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    asked = settings.answer_tokens
    for value in (
        body.get("max_completion_tokens"),
        body.get("max_tokens"),
        (options or {}).get("num_predict"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            asked = value
            break
    return min(asked, max(settings.answer_tokens, window // 4), window // 2)


def fit(
    messages: list[dict[str, Any]],
    passages: Sequence[Passage],
    *,
    window: int,
    reserve: int,
    placement: str,
    extra: int = 0,
    trim_history: bool = True,
    extra_droppable: bool = False,
) -> Fitted:
    """The messages with as much context as fits the window less the answer's reserve.

    System prompts, the last user message and everything after it always stay, and so do the
    tool definitions (``extra`` tokens) unless ``extra_droppable`` and the best passage fits only
    without them. Then, in this order: passages in rank order up to ``PASSAGE_SHARE`` of the room
    left (the best one in any case), the newest history turns that fit (oldest dropped first,
    whole turns; none dropped unless ``trim_history``), and the remaining passages in what is left.
    """
    reserve = min(reserve, window // 2)
    budget = window - reserve
    last_user = max(
        (i for i, m in enumerate(messages) if m.get("role") == "user"),
        default=max(len(messages) - 1, 0),
    )
    turns: list[list[int]] = []  # droppable history, oldest first; a turn: a message and its replies
    if trim_history:
        for i in range(last_user):
            role = messages[i].get("role")
            if role in SYSTEM_ROLES:
                continue
            if turns and role in ("assistant", "tool") and turns[-1][-1] == i - 1:
                turns[-1].append(i)
            else:
                turns.append([i])
    in_turns = {i for turn in turns for i in turn}
    required = [i for i in range(len(messages)) if i not in in_turns]

    def kept_messages(kept: Sequence[list[int]]) -> list[dict[str, Any]]:
        return [messages[i] for i in sorted([*required, *(i for turn in kept for i in turn)])]

    # Each message is estimated once. The estimate is a sum over the messages, and the context
    # changes one message only, so dropping a turn costs a subtraction and trying a passage one
    # block's estimate, never a new pass over the history (agents send thousands of messages).
    raw = [_raw(message) for message in messages]
    target = _context_target(messages, placement)
    required_raw = sum(raw[i] for i in required if i != target)
    turn_raw = [sum(raw[i] for i in turn) for turn in turns]

    def context_raw(chosen: Sequence[Passage]) -> int:
        """The target message's share with the context in it (a new system message's, if none)."""
        if target is None:
            return _raw({"role": "system", "content": context_block(_numbered(chosen))}) if chosen else 0
        if target == NO_TARGET:
            return 0
        if not chosen:
            return raw[target]
        message = _with_text(
            messages[target], context_block(_numbered(chosen)), before=placement == "user-prefix"
        )
        return _raw(message)

    def prompt(history_raw: int, chosen: Sequence[Passage], tools: int) -> int:
        return _with_margin(tools + 3 + required_raw + history_raw + context_raw(chosen))

    result = Fitted(messages=[], passages=[], history_dropped=0, prompt_estimate=0)
    chosen: list[Passage] = []
    if passages:
        best = passages[0]
        if extra and extra_droppable and prompt(0, [best], extra) > budget >= prompt(0, [best], 0):
            extra, result.extra_dropped = 0, True
        if prompt(0, [best], extra) > budget:
            room = budget - prompt(0, [replace(best, text="")], extra)
            if room >= MIN_PASSAGE_TOKENS:
                best, result.shortened = _shortened(best, room), True
        if prompt(0, [best], extra) <= budget:
            chosen.append(best)
            floor = prompt(0, [], extra)
            share = floor + PASSAGE_SHARE * (budget - floor)
            for passage in passages[1:]:
                if prompt(0, [*chosen, passage], extra) <= share:
                    chosen.append(passage)
    history_raw, first = sum(turn_raw), 0  # turns[first:] are kept
    fixed = extra + 3 + required_raw + context_raw(chosen)
    while first < len(turns) and _with_margin(fixed + history_raw) > budget:
        history_raw -= turn_raw[first]
        result.history_dropped += len(turns[first])
        first += 1
    kept = turns[first:]
    for passage in passages:
        taken = {c.number for c in chosen}
        if passage.number not in taken and prompt(history_raw, [*chosen, passage], extra) <= budget:
            chosen.append(passage)
    rank = {p.number: n for n, p in enumerate(passages)}
    result.passages = _numbered(sorted(chosen, key=lambda p: rank[p.number]))
    result.messages = with_context(kept_messages(kept), result.passages, placement)
    result.prompt_estimate = estimate(result.messages, extra)
    return result


NO_TARGET = -1  # the context joins no message (no user message to prefix)


def _context_target(messages: Sequence[dict[str, Any]], placement: str) -> int | None:
    """The index of the message the context joins; None: a new system message is inserted. An
    over-estimate where a dropped turn would let it join a later system message instead."""
    if placement == "user-prefix":
        return max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=NO_TARGET)
    return 0 if messages and messages[0].get("role") in SYSTEM_ROLES else None


def _numbered(passages: Sequence[Passage]) -> list[Passage]:
    return [_renumber(p, n) for n, p in enumerate(passages, start=1)]


def _shortened(passage: Passage, tokens: int) -> Passage:
    """The passage cut to about ``tokens`` (its start kept), marked as cut."""
    low, high = 0, len(passage.text)
    while low < high:  # the longest prefix within the budget
        middle = (low + high + 1) // 2
        if estimate_tokens(passage.text[:middle]) * ESTIMATE_MARGIN + 2 <= tokens:
            low = middle
        else:
            high = middle - 1
    return replace(passage, text=passage.text[:low].rstrip() + " …")


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
