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

log = get_logger("ragproxy.chat")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

OpenChunks = Callable[[], AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]]


def as_proxy_error(exc: Exception) -> ProxyError:
    if isinstance(exc, ProxyError):
        return exc
    log.exception("chat.failed")
    return ProxyError(f"internal error: {type(exc).__name__}", code="internal_error")


class Frames(Protocol):
    """A wire's reply, told from the chat's chunks: the stream's frames, and the whole reply.
    For a reply that does not stream, ``feed`` gathers and ``whole`` gives the reply."""

    stream_headers: list[tuple[bytes, bytes]]  # the streamed reply's content type and cache headers
    json_type: bytes  # the content type of a whole reply or an error

    def start(self) -> bytes: ...
    def feed(self, chunk: dict[str, Any]) -> bytes: ...
    def end(self) -> bytes: ...
    def fail(self, error: ProxyError) -> bytes: ...
    def whole(self) -> Any: ...  # after end(): the reply of a request that did not stream
    def error(self, error: ProxyError) -> tuple[int, Any]: ...  # before anything was sent


class Responder:
    """One exchange's reply, in its wire's frames, under one cancel scope: errors before the
    upstream answers go out as HTTP errors in the wire's shape, later ones as the wire's own
    failure frame; a client that leaves, before the first token, mid-stream or while waiting
    for a reply that does not stream, cancels the exchange (and so the upstream request)."""

    def __init__(
        self,
        open_chunks: OpenChunks,
        frames: Frames,
        *,
        stream: bool,
        record: dict[str, Any],
        extra_headers: Callable[[], list[tuple[bytes, bytes]]] = list,
    ) -> None:
        self._open = open_chunks
        self._frames = frames
        self._stream = stream
        self._record = record
        self._extra_headers = extra_headers  # read once the upstream has answered
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
        frames = self._frames
        try:
            async with self._open() as chunks:
                headers = frames.stream_headers + self._extra_headers()
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                self._started = True
                if body := frames.start():
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                async for chunk in chunks:
                    if body := frames.feed(chunk):
                        await send({"type": "http.response.body", "body": body, "more_body": True})
            last = frames.end()
        except Exception as exc:
            error = self._failed(exc)
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
            await self._send_json(send, *frames.error(self._failed(exc)))
            return
        await self._send_json(send, 200, frames.whole(), self._extra_headers())

    def _failed(self, exc: Exception) -> ProxyError:
        error = as_proxy_error(exc)
        self._record["error"] = error.code or error.type
        return error

    async def _send_json(
        self, send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        start_headers = [(b"content-type", self._frames.json_type), *(headers or [])]
        await send({"type": "http.response.start", "status": status, "headers": start_headers})
        self._complete = True
        await send({"type": "http.response.body", "body": orjson.dumps(body), "more_body": False})
