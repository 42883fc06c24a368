"""How ragproxy is served: uvicorn with its httptools parser, made to keep the authority of an
absolute-form request target (``GET http://host/path HTTP/1.1``), which uvicorn drops before
the app sees the request. RFC 9112 section 3.2.2 makes that authority, not the Host header, the
host a request is for, so the Host check (``security.py``) must see it.

The protocol also bounds what a client may cost before any key is checked: the bytes of a
request head (llhttp has no limit, and httptools gathers a header's value by concatenation),
the time to send one, and how long a connection may stay open without asking anything
(uvicorn's keep-alive timer starts only after a first response)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from litestar.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from proxy.api.security import TARGET_AUTHORITY
from proxy.errors import ConfigError
from proxy.settings import Settings

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; browsers' own limits are well below


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the authority of an absolute-form target in the scope's
    ``extensions``, and the limits on request heads and idle connections."""

    header_timeout = 10.0  # set per server by ``uvicorn_config``

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes: int | None = 0  # of the request head being read; None while none is
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_read = 0
        # A connection that never asks is idle like a kept-alive one: the same timer closes it.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is None:
            super().data_received(data)
            return
        if self._head_bytes == 0 and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)
        room = MAX_HEAD_BYTES - self._head_bytes
        self._head_bytes += min(len(data), room)
        heads = self._heads_read
        super().data_received(data[:room])
        if len(data) <= room or self.transport.is_closing():
            return
        if self._heads_read == heads:
            self._refuse(431, "Request header fields too large.")
        else:  # the head ended within the limit: a body, or the next request, follows
            self.data_received(data[room:])

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._heads_read += 1
        self._stop_head_timer()
        if not self.url.startswith(b"/") and self.url != b"*":
            authority = urlsplit(self.url.decode("latin-1")).netloc
            self.scope.setdefault("extensions", {})[TARGET_AUTHORITY] = {"authority": authority}
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_bytes = 0  # the next request's head, counted from its first byte
        super().on_message_complete()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._refuse(408, "Request headers not received in time.")

    def _refuse(self, status: int, message: str) -> None:
        """Answer and close; a response already under way (to a pipelined request before
        this one) is only cut, not interleaved with this one."""
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            body = message.encode("ascii")
            head = [STATUS_LINE[status]]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head += [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + body)
        self.transport.close()


def uvicorn_config(app: ASGIApp, settings: Settings, **options: Any) -> uvicorn.Config:
    protocol = type("EdgeProtocol", (EdgeProtocol,), {"header_timeout": settings.header_timeout})
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        **options,
    )


def one_line_startup_errors(app: ASGIApp) -> ASGIApp:
    """A setting that fails as the server starts (an embedder that does not load, a folder
    claimed by another collection) is reported as its message alone: the lifespan would hand
    the server a whole traceback to log."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_short(message: Any) -> None:
            if message.get("type") == "lifespan.startup.failed":
                error = sys.exc_info()[1]  # sent while the lifespan handles the exception
                if isinstance(error, BaseExceptionGroup):
                    group = error.split(ConfigError)[0]
                    error = group.exceptions[0] if group is not None else error
                    while isinstance(error, BaseExceptionGroup):
                        error = error.exceptions[0]
                if isinstance(error, ConfigError):
                    message = {**message, "message": f"ragproxy: error: {error}"}
            await send(message)

        await app(scope, receive, send_short)

    return wrapped
