"""``POST /v1/completions``: the legacy text completions editors use for code completion (a
prompt, and a ``suffix`` to fill in the middle). Passed through to the upstream, Ollama's
``/api/generate`` or the server's own ``/v1/completions``, streamed or not. Never retrieval: a
completion continues the text it is given, and fill-in-the-middle must not be disturbed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from litestar import post
from litestar.di import NamedDependency
from litestar.types import ASGIApp

from proxy.api import apis
from proxy.api.embedding import MAX_INPUTS, MAX_TOKENS, check_inputs
from proxy.api.exchange import AnyRequest
from proxy.api.openapi import OPENAI_COMPLETIONS, documented
from proxy.api.requestlog import request_record
from proxy.api.responders import SSE_HEADERS, Responder
from proxy.api.schemas import check_sampling, read_checked, resolve_model
from proxy.api.security import key_collections
from proxy.errors import BadRequest, ProxyError
from proxy.pipeline.chat import visible_collections
from proxy.pipeline.controls import split_alias
from proxy.pipeline.services import Services
from proxy.upstream.client import Upstream
from proxy.upstream.frames import DONE, choice_index, sse_event, sse_events


@post("/v1/completions", status_code=200, operation_class=documented(OPENAI_COMPLETIONS))
async def completions(request: AnyRequest, services: NamedDependency[Services]) -> ASGIApp:
    settings, pool, index = services.settings, services.pool, services.index
    body = await read_checked(request, _check)  # a long prompt: in a worker thread
    model = resolve_model(body.get("model"), settings)
    if index is not None:  # "model+notes" in an editor's list: the model itself
        model = split_alias(model, visible_collections(index, key_collections(request.scope)))[0]
    body = {**body, "model": model}
    stream = body.get("stream") is True
    record = request_record(request.scope)
    record.update(model=model, stream=stream, rag=False, rag_skipped="completion")
    deadline = pool.first_byte_deadline()

    @asynccontextmanager
    async def completed(upstream: Upstream) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        record["upstream"] = upstream.base
        async with upstream.complete(body, deadline) as chunks:
            yield chunks

    def open_chunks() -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        return pool.open(model, completed)

    include_usage = isinstance(body.get("stream_options"), dict) and body["stream_options"].get(
        "include_usage"
    )
    return Responder(open_chunks, CompletionFrames(record, bool(include_usage)), stream=stream, record=record)


PROMPT_SHAPE = "'prompt' must be a string, an array of strings, or token arrays"


def _check(body: dict[str, Any]) -> dict[str, Any]:
    """The fields forwarded, of the types OpenAI documents (a server may fail with 500 on
    others), and the prompt within the embeddings' caps: a llama.cpp server holds every prompt
    of a batch in memory at once."""
    _check_prompt(body.get("prompt"))
    if body.get("suffix") is not None and not isinstance(body["suffix"], str):
        raise BadRequest("'suffix' must be a string", param="suffix")
    check_sampling(body)
    for name, kind, what in (
        ("best_of", int, "an integer"),
        ("logprobs", int, "an integer"),
        ("echo", bool, "a boolean"),
        ("stream", bool, "a boolean"),
        ("stream_options", dict, "an object"),
    ):
        value = body.get(name)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise BadRequest(f"'{name}' must be {what}", param=name)
    return body


def _check_prompt(prompt: Any) -> None:
    if isinstance(prompt, str) or _token_id(prompt[0] if isinstance(prompt, list) and prompt else None):
        prompts = [prompt]  # one text, or one token array
    elif isinstance(prompt, list) and prompt:
        prompts = prompt
    else:
        raise BadRequest(PROMPT_SHAPE, param="prompt")
    # counted before any item is looked into: a hostile array is refused without a pass over it
    if len(prompts) > MAX_INPUTS:
        raise BadRequest(
            f"'prompt' has {len(prompts):,} items; at most {MAX_INPUTS:,} per request", param="prompt"
        )
    tokens = sum(len(p) for p in prompts if isinstance(p, list))
    if tokens > MAX_TOKENS:
        raise BadRequest(
            f"'prompt' holds {tokens:,} tokens; at most {MAX_TOKENS:,} per request", param="prompt"
        )
    texts = all(isinstance(p, str) for p in prompts)
    if not texts and not all(isinstance(p, list) and p and all(map(_token_id, p)) for p in prompts):
        raise BadRequest(PROMPT_SHAPE, param="prompt")
    if texts:
        check_inputs(prompts, param="prompt")


def _token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class CompletionFrames:
    """``text_completion`` chunks as server-sent events ending in ``[DONE]``, or one completion
    with a choice per index seen (``n`` above 1, or several prompts)."""

    stream_headers = SSE_HEADERS
    json_type = b"application/json"

    def __init__(self, record: dict[str, Any], include_usage: bool) -> None:
        self.record = record
        self.include_usage = include_usage
        self.texts: dict[int, list[str]] = {}
        self.finishes: dict[int, str | None] = {}
        self.last: dict[str, Any] = {}
        self.usage: dict[str, Any] | None = None

    def start(self) -> bytes:
        return b""

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if usage := chunk.get("usage"):
            self.usage = usage
            self.record.update(
                prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens")
            )
            if not chunk.get("choices") and not self.include_usage:
                return b""
        for choice in chunk.get("choices") or []:
            index = choice_index(choice)
            self.texts.setdefault(index, []).append(choice.get("text") or "")
            self.finishes[index] = choice.get("finish_reason") or self.finishes.get(index)
        self.last = chunk
        return sse_events(chunk)

    def end(self) -> bytes:
        self.record["finish_reason"] = self.finishes.get(0)
        return DONE

    def fail(self, error: ProxyError) -> bytes:
        return sse_event(error.body()) + DONE

    def whole(self) -> Any:
        texts = self.texts or {0: []}
        choices = [
            {
                "text": "".join(texts[index]),
                "index": index,
                "logprobs": None,
                "finish_reason": self.finishes.get(index) or "stop",
            }
            for index in sorted(texts)
        ]
        completion = {
            "id": self.last.get("id") or "cmpl-0",
            "object": "text_completion",
            "created": self.last.get("created") or int(time.time()),
            "model": self.last.get("model"),
            "choices": choices,
        }
        if self.usage is not None:
            completion["usage"] = self.usage
        return completion

    def error(self, error: ProxyError) -> tuple[int, Any]:
        return error.status, error.body()


router = apis.router(apis.COMPLETIONS, [completions])
