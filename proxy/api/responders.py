"""The chat response as a plain ASGI app, so one cancel scope covers the whole exchange: a client
that leaves, before the first token, mid-stream or while waiting for a non-streamed reply,
cancels it, and leaving the upstream's ``async with`` closes that connection too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import anyio
import orjson
from litestar.types import Receive, Scope, Send

from proxy.errors import ProxyError
from proxy.logging import get_logger
from proxy.upstream.frames import DONE, choice_index, sse_event, sse_events

log = get_logger("ragproxy.chat")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

OpenChunks = Callable[[], AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]]


class ExchangeResponder:
    """One request/response exchange under one cancel scope, cancelled when the client leaves.
    Subclasses send the reply in ``_send_stream`` or ``_send_one``."""

    def __init__(self, *, stream: bool, record: dict[str, Any], content_type: bytes) -> None:
        self._stream = stream
        self._record = record
        self._json_headers = [(b"content-type", content_type)]
        self._started = False
        self._complete = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._cancel_on_disconnect, receive, tasks.cancel_scope)
            try:
                await (self._send_stream(send) if self._stream else self._send_one(send))
            finally:
                tasks.cancel_scope.cancel()

    async def _cancel_on_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if self._complete:
                    return  # servers report the end of a finished exchange the same way
                self._record["client_disconnected"] = True
                scope.cancel()
                return

    async def _send_stream(self, send: Send) -> None:
        raise NotImplementedError

    async def _send_one(self, send: Send) -> None:
        raise NotImplementedError

    async def _send_json(
        self, send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": self._json_headers + (headers or [])}
        )
        self._complete = True
        await send({"type": "http.response.body", "body": orjson.dumps(body), "more_body": False})


class ChatResponder(ExchangeResponder):
    def __init__(
        self,
        open_chunks: OpenChunks,
        *,
        stream: bool,
        usage: Callable[[], dict[str, int]],
        record: dict[str, Any],
        extra_headers: Callable[[], list[tuple[bytes, bytes]]] = list,
        extra_fields: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        super().__init__(stream=stream, record=record, content_type=b"application/json")
        self._open = open_chunks
        self._usage = usage
        self._extra_headers = extra_headers  # read once the upstream has answered
        self._extra_fields = extra_fields

    async def _send_stream(self, send: Send) -> None:
        try:
            async with self._open() as chunks:
                async for chunk in chunks:
                    if not self._started:
                        headers = SSE_HEADERS + self._extra_headers()
                        await send({"type": "http.response.start", "status": 200, "headers": headers})
                        self._started = True
                    await send({"type": "http.response.body", "body": sse_events(chunk), "more_body": True})
        except Exception as exc:
            error = as_proxy_error(exc)
            self._record["error"] = error.code or error.type
            if not self._started:
                await self._send_json(send, error.status, error.body())
                return
            await send({"type": "http.response.body", "body": sse_event(error.body()), "more_body": True})
        if not self._started:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        self._complete = True
        await send({"type": "http.response.body", "body": DONE, "more_body": False})

    async def _send_one(self, send: Send) -> None:
        try:
            async with self._open() as chunks:
                completion = await aggregate(chunks)
        except Exception as exc:
            error = as_proxy_error(exc)
            self._record["error"] = error.code or error.type
            await self._send_json(send, error.status, error.body())
            return
        completion["usage"] = self._usage()
        completion.update(self._extra_fields())
        await self._send_json(send, 200, completion, self._extra_headers())


def as_proxy_error(exc: Exception) -> ProxyError:
    if isinstance(exc, ProxyError):
        return exc
    log.exception("chat.failed")
    return ProxyError(f"internal error: {type(exc).__name__}", code="internal_error")


async def aggregate(chunks: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """A whole ``chat.completion`` from the stream of chunks: one choice per index seen."""
    completion: dict[str, Any] = {}
    choices: dict[int, _Aggregate] = {}
    async for chunk in chunks:
        if not completion:
            completion = {
                "id": chunk.get("id"),
                "object": "chat.completion",
                "created": chunk.get("created"),
                "model": chunk.get("model"),
                "system_fingerprint": chunk.get("system_fingerprint"),
            }
        for choice in chunk.get("choices") or ():
            choices.setdefault(choice_index(choice), _Aggregate()).add(choice)
    completion["choices"] = [choices[i].choice(i) for i in sorted(choices)] or [_Aggregate().choice(0)]
    return completion


class _Aggregate:
    """One choice's deltas, gathered into its message."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {"role": "assistant", "content": None}
        self.texts: dict[str, list[str]] = {}
        self.calls: dict[int, dict[str, Any]] = {}
        self.logprobs: list[Any] = []
        self.finish: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        for key, value in (choice.get("delta") or {}).items():
            if key == "tool_calls":
                for call in value:
                    _merge_call(self.calls.setdefault(call.get("index", len(self.calls)), {}), call)
            elif key != "role" and isinstance(value, str):
                self.texts.setdefault(key, []).append(value)
            elif key != "role" and value is not None:
                self.message.setdefault(key, value)
        if isinstance(choice.get("logprobs"), dict):
            self.logprobs.extend(choice["logprobs"].get("content") or ())
        self.finish = choice.get("finish_reason") or self.finish

    def choice(self, index: int) -> dict[str, Any]:
        message = dict(self.message)
        for key, parts in self.texts.items():
            message[key] = "".join(parts)
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return {
            "index": index,
            "message": message,
            "logprobs": {"content": self.logprobs} if self.logprobs else None,
            "finish_reason": self.finish or "stop",
        }


def _merge_call(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key in ("id", "type"):
        if part.get(key):
            into[key] = part[key]
    function = into.setdefault("function", {"name": "", "arguments": ""})
    for key in ("name", "arguments"):
        value = (part.get("function") or {}).get(key)
        if value:
            function[key] += value


class Frames(Protocol):
    """A wire's reply, told from the chat's chunks: the stream's frames, and the whole reply."""

    def start(self) -> bytes: ...
    def feed(self, chunk: dict[str, Any]) -> bytes: ...
    def end(self) -> bytes: ...
    def fail(self, error: ProxyError) -> bytes: ...
    def whole(self) -> Any: ...  # after end(): the reply of a request that did not stream
    def error(self, error: ProxyError) -> tuple[int, Any]: ...  # before anything was sent


class FramesResponder(ExchangeResponder):
    """A reply in another wire's events (Responses, Anthropic Messages), with the chat's
    semantics: errors before the upstream answers as HTTP errors, later ones as the wire's own
    failure event; a client that leaves cancels the exchange."""

    def __init__(
        self,
        open_chunks: OpenChunks,
        frames: Frames,
        *,
        stream: bool,
        record: dict[str, Any],
        extra_headers: Callable[[], list[tuple[bytes, bytes]]] = list,
    ) -> None:
        super().__init__(stream=stream, record=record, content_type=b"application/json")
        self._open = open_chunks
        self._frames = frames
        self._extra_headers = extra_headers

    async def _send_stream(self, send: Send) -> None:
        frames = self._frames
        try:
            async with self._open() as chunks:
                headers = SSE_HEADERS + self._extra_headers()
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                self._started = True
                await send({"type": "http.response.body", "body": frames.start(), "more_body": True})
                async for chunk in chunks:
                    if body := frames.feed(chunk):
                        await send({"type": "http.response.body", "body": body, "more_body": True})
            last = frames.end()
        except Exception as exc:
            error = as_proxy_error(exc)
            self._record["error"] = error.code or error.type
            if not self._started:
                await self._send_json(send, *frames.error(error))
                return
            last = frames.fail(error)
        self._complete = True
        await send({"type": "http.response.body", "body": last, "more_body": False})

    async def _send_one(self, send: Send) -> None:
        frames = self._frames
        try:
            async with self._open() as chunks:
                frames.start()
                async for chunk in chunks:
                    frames.feed(chunk)
            frames.end()
        except Exception as exc:
            error = as_proxy_error(exc)
            self._record["error"] = error.code or error.type
            await self._send_json(send, *frames.error(error))
            return
        await self._send_json(send, 200, frames.whole(), self._extra_headers())
