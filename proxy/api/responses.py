"""``POST /v1/responses``: the OpenAI Responses API (Codex, the official SDKs' ``responses``),
through the same retrieval, fitting and upstream as chat completions (``responses_wire``
translates)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from litestar import post
from litestar.types import ASGIApp

from proxy.api.openai import AnyRequest, _record_stats, augment_request, sources_header
from proxy.api.openapi import OPENAI_RESPONSES, documented
from proxy.api.requestlog import request_record
from proxy.api.responders import FramesResponder
from proxy.api.responses_wire import Encoder, to_chat
from proxy.api.schemas import parse_json_object, validate_chat
from proxy.errors import ProxyError
from proxy.pipeline.chat import open_chat, prepare_chat


@post("/v1/responses", status_code=200, operation_class=documented(OPENAI_RESPONSES))
async def create_response(request: AnyRequest) -> ASGIApp:
    settings, upstream = request.app.state.settings, request.app.state.upstream
    raw = parse_json_object(await request.body())
    chat, wire = to_chat(raw)
    body = validate_chat(chat, settings)
    call = prepare_chat(body)
    call.keep_tools = True  # the API of agents (Codex): their tools are never traded for passages
    stream = raw.get("stream") is True
    record = request_record(request.scope)
    record.update(model=body["model"], stream=stream)
    if wire.dropped_tools:
        record["tools_not_offered"] = wire.dropped_tools
    if settings.log_content:
        record["messages"] = body["messages"]
    # the wire carries reasoning in items of its own, whatever the chat API's setting
    split = dataclasses.replace(settings, reasoning_format="reasoning_content")

    @asynccontextmanager
    async def open_chunks() -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        try:
            await augment_request(request, call, "responses")
            record["model"] = call.body["model"]
            async with open_chat(upstream, split, call) as chunks:
                yield chunks
        finally:
            _record_stats(record, call)

    return FramesResponder(
        open_chunks,
        ResponsesFrames(Encoder(wire, body["model"])),
        stream=stream,
        record=record,
        extra_headers=lambda: sources_header(call),
    )


class ResponsesFrames:
    """The Responses encoder's events as server-sent events (``event:`` and ``data:`` lines)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self._last: list[dict[str, Any]] = []

    def start(self) -> bytes:
        return _sse(self.encoder.start())

    def feed(self, chunk: dict[str, Any]) -> bytes:
        return _sse(self.encoder.feed(chunk))

    def end(self) -> bytes:
        self._last = self.encoder.end()
        return _sse(self._last)

    def fail(self, error: ProxyError) -> bytes:
        return _sse(self.encoder.fail(error.code or error.type, error.message))

    def whole(self) -> Any:
        return self._last[-1]["response"]

    def error(self, error: ProxyError) -> tuple[int, Any]:
        return error.status, error.body()


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n" for event in events
    )
