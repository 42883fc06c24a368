"""``POST /v1/responses``: the OpenAI Responses API (Codex, the official SDKs' ``responses``),
through the same retrieval, fitting and upstream as chat completions (``responses_wire``
translates)."""

from __future__ import annotations

from typing import Any

import orjson
from litestar import post
from litestar.di import NamedDependency
from litestar.types import ASGIApp

from proxy.api import apis
from proxy.api.exchange import AnyRequest, chat_exchange, sources_header
from proxy.api.openapi import OPENAI_RESPONSES, documented
from proxy.api.responders import SSE_HEADERS, Responder
from proxy.api.responses_wire import Encoder, to_chat
from proxy.api.responses_wire import Wire as ResponsesWire
from proxy.api.schemas import read_checked, validate_chat
from proxy.errors import ProxyError
from proxy.pipeline.services import Services


@post("/v1/responses", status_code=200, operation_class=documented(OPENAI_RESPONSES))
async def create_response(request: AnyRequest, services: NamedDependency[Services]) -> ASGIApp:
    settings = services.settings

    def checked(raw: dict[str, Any]) -> tuple[dict[str, Any], ResponsesWire, dict[str, Any]]:
        chat, wire = to_chat(raw)
        return raw, wire, validate_chat(chat, settings)

    raw, wire, body = await read_checked(request, checked)  # a large body: in a worker thread
    stream = raw.get("stream") is True
    chat = chat_exchange(request, services, body, "responses", stream=stream, agent=True)
    if wire.dropped_tools:
        chat.record["tools_not_offered"] = wire.dropped_tools
    return Responder(
        chat.open,
        ResponsesFrames(Encoder(wire, body["model"])),
        stream=stream,
        record=chat.record,
        extra_headers=lambda: sources_header(chat.call),
    )


class ResponsesFrames:
    """The Responses encoder's events as server-sent events (``event:`` and ``data:`` lines)."""

    stream_headers = SSE_HEADERS
    json_type = b"application/json"

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


router = apis.router(apis.RESPONSES, [create_response])
