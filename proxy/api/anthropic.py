"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: the Anthropic Messages API
(Claude Code, Claude Desktop, the ``anthropic`` SDK), through the same retrieval, fitting and
upstream as chat completions (``anthropic_wire`` translates). Keys come as ``x-api-key`` or
``Authorization: Bearer``; errors are in Anthropic's shape."""

from __future__ import annotations

from typing import Any

import orjson
from litestar import post
from litestar.di import NamedDependency
from litestar.types import ASGIApp

from proxy.api import apis
from proxy.api.anthropic_wire import Encoder, to_chat
from proxy.api.anthropic_wire import Wire as MessagesWire
from proxy.api.exchange import AnyRequest, chat_exchange, sources_header
from proxy.api.openapi import ANTHROPIC_MESSAGES, documented
from proxy.api.responders import SSE_HEADERS, Responder
from proxy.api.schemas import read_checked, validate_chat
from proxy.errors import ProxyError, anthropic_error
from proxy.pipeline import context
from proxy.pipeline.conversation import strip_own_additions
from proxy.pipeline.services import Services


@post("/v1/messages", status_code=200, operation_class=documented(ANTHROPIC_MESSAGES))
async def create_message(request: AnyRequest, services: NamedDependency[Services]) -> ASGIApp:
    settings = services.settings

    def checked(raw: dict[str, Any]) -> tuple[dict[str, Any], MessagesWire, dict[str, Any]]:
        chat, wire = to_chat(raw, settings.model)
        return raw, wire, validate_chat(chat, settings)

    raw, wire, body = await read_checked(request, checked)  # a large body: in a worker thread
    stream = raw.get("stream") is True
    chat = chat_exchange(request, services, body, "anthropic", stream=stream, agent=True)
    if wire.dropped_tools:
        chat.record["tools_not_offered"] = wire.dropped_tools
    encoder = Encoder(
        wire, lambda: chat.call.rag.prompt_estimate or context.estimate(chat.call.body["messages"])
    )

    return Responder(
        chat.open,
        MessagesFrames(encoder),
        stream=stream,
        record=chat.record,
        extra_headers=lambda: sources_header(chat.call),
    )


@post(
    "/v1/messages/count_tokens",
    status_code=200,
    operation_class=documented(ANTHROPIC_MESSAGES, upstream=False),
)
async def count_tokens(request: AnyRequest, services: NamedDependency[Services]) -> dict[str, int]:
    """An estimate of the prompt's tokens (the messages, system and tools, as ragproxy counts
    them when fitting the window); the model is not called."""
    settings = services.settings

    def counted(raw: dict[str, Any]) -> dict[str, int]:  # a large body: in a worker thread
        chat, _ = to_chat({"max_tokens": 1, **raw}, settings.model)
        messages = strip_own_additions(validate_chat(chat, settings)["messages"])
        return {"input_tokens": context.estimate(messages, context.tools_tokens(chat))}

    return await read_checked(request, counted)


class MessagesFrames:
    """The Messages encoder's events as server-sent events (``event:`` and ``data:`` lines: the
    SDK reads the event name)."""

    stream_headers = SSE_HEADERS
    json_type = b"application/json"

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def start(self) -> bytes:
        return _sse(self.encoder.start())

    def feed(self, chunk: dict[str, Any]) -> bytes:
        return _sse(self.encoder.feed(chunk))

    def end(self) -> bytes:
        return _sse(self.encoder.end())

    def fail(self, error: ProxyError) -> bytes:
        _, body = anthropic_error(error.status, error.message)
        return _sse(self.encoder.fail(body["error"]["type"], error.message))

    def whole(self) -> Any:
        return self.encoder.message()

    def error(self, error: ProxyError) -> tuple[int, Any]:
        return anthropic_error(error.status, error.message)


def _sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n" for name, data in events
    )


router = apis.router(apis.ANTHROPIC, [create_message, count_tokens])
