"""``POST /v1/responses``: the OpenAI Responses API (Codex, the official SDKs' ``responses``),
through the same retrieval, fitting and upstream as chat completions (``responses_wire``
translates)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from litestar import post
from litestar.types import ASGIApp, Send

from proxy.api.openai import AnyRequest, _record_stats, augment_request, sources_header
from proxy.api.openapi import OPENAI_RESPONSES, documented
from proxy.api.requestlog import request_record
from proxy.api.responders import SSE_HEADERS, ExchangeResponder, OpenChunks, as_proxy_error
from proxy.api.responses_wire import Encoder, to_chat
from proxy.api.schemas import parse_json_object, validate_chat
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

    return ResponsesResponder(
        open_chunks,
        Encoder(wire, body["model"]),
        stream=stream,
        record=record,
        extra_headers=lambda: sources_header(call),
    )


class ResponsesResponder(ExchangeResponder):
    def __init__(
        self,
        open_chunks: OpenChunks,
        encoder: Encoder,
        *,
        stream: bool,
        record: dict[str, Any],
        extra_headers: Callable[[], list[tuple[bytes, bytes]]],
    ) -> None:
        super().__init__(stream=stream, record=record, content_type=b"application/json")
        self._open = open_chunks
        self._encoder = encoder
        self._extra_headers = extra_headers

    async def _send_stream(self, send: Send) -> None:
        encoder = self._encoder
        try:
            async with self._open() as chunks:
                headers = SSE_HEADERS + self._extra_headers()
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                self._started = True
                await self._write(send, encoder.start())
                async for chunk in chunks:
                    if events := encoder.feed(chunk):
                        await self._write(send, events)
            last = encoder.end()
        except Exception as exc:
            error = as_proxy_error(exc)
            self._record["error"] = error.code or error.type
            if not self._started:
                await self._send_json(send, error.status, error.body())
                return
            last = encoder.fail(error.code or error.type, error.message)
        self._complete = True
        await self._write(send, last, more=False)

    async def _send_one(self, send: Send) -> None:
        encoder = self._encoder
        try:
            async with self._open() as chunks:
                encoder.start()
                async for chunk in chunks:
                    encoder.feed(chunk)
            final = encoder.end()[-1]["response"]
        except Exception as exc:
            error = as_proxy_error(exc)
            self._record["error"] = error.code or error.type
            await self._send_json(send, error.status, error.body())
            return
        await self._send_json(send, 200, final, self._extra_headers())

    async def _write(self, send: Send, events: list[dict[str, Any]], *, more: bool = True) -> None:
        body = b"".join(
            b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
            for event in events
        )
        await send({"type": "http.response.body", "body": body, "more_body": more})
