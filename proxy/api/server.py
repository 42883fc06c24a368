"""How ragproxy is served: uvicorn with its httptools parser, made to keep the authority of an
absolute-form request target (``GET http://host/path HTTP/1.1``), which uvicorn drops before
the app sees the request. RFC 9112 section 3.2.2 makes that authority, not the Host header, the
host a request is for, so the Host check (``security.py``) must see it.

The protocol also bounds what a client may cost before any key is checked: the bytes of a
request head (llhttp has no limit, and httptools gathers a header's value by concatenation),
the time to send one, the pace of a body (uvicorn waits for one forever), how long a connection
may stay open without asking anything (uvicorn's keep-alive timer starts only after a first
response), and how many connections may be open at once, so that the open-file limit is not
reached by connections that hold nothing but a descriptor."""

from __future__ import annotations

import asyncio
import resource
import sys
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from litestar.types import ASGIApp
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from proxy.api.requestlog import EDGE_STATUS
from proxy.api.security import TARGET_AUTHORITY
from proxy.errors import ConfigError
from proxy.logging import get_logger
from proxy.settings import Settings

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; browsers' own limits are well below
# A body's slowest pace, averaged over each ``--body-timeout`` period: a 10 MiB body at it takes
# three hours, yet a connection trickling a byte every few seconds is cut (an idle-gap timer alone
# would keep that one forever). Apache's mod_reqtimeout default is 500 bytes a second.
MIN_BODY_RATE = 1024
FDS_PER_CONNECTION = 2  # the client's socket, and the upstream's while a chat is proxied
FDS_RESERVED = 128  # the index, the log, the folders watched, the embedder's files
REFUSALS_LOGGED_EVERY = 60.0  # seconds: a flood at the cap logs a line a minute, not one a connection


class _Flow(FlowControl):
    """uvicorn's flow control, remembering whether reading was paused at all since it was last
    asked: a client is not blamed for a body it could not send while the server was not reading."""

    paused_since_asked = False

    def pause_reading(self) -> None:
        self.paused_since_asked = True
        super().pause_reading()

    def was_paused(self) -> bool:
        paused = self.paused_since_asked or self.read_paused
        self.paused_since_asked = False
        return paused


class _Refusals:
    """Connections refused at the cap since the last log line, shared by a server's connections."""

    def __init__(self) -> None:
        self.count = 0
        self.logged_at = float("-inf")


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the authority of an absolute-form target in the scope's
    ``extensions``, and the limits on request heads, bodies, idle connections and their number."""

    # set per server by ``uvicorn_config``
    header_timeout = 10.0
    body_timeout = 20.0
    max_connections = 1000
    refusals = _Refusals()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = self._flow = _Flow(transport)  # before any request's cycle is handed it
        self._head_bytes: int | None = 0  # of the request head being read; None while none is
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_read = 0
        self._body_timer: asyncio.TimerHandle | None = None  # while a request's body is incomplete
        self._payload = 0  # of the current request's body
        self._paced = 0  # of it, when its pace was last checked
        self._received = 0  # bytes of the current request since its head: payload and framing
        if len(self.connections) > self.max_connections:
            self._refuse_connection()
            return
        # A connection that never asks is idle like a kept-alive one: the same timer closes it.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is None:
            self._received += len(data)
            super().data_received(data)
            # Chunk sizes, extensions and trailers (headers after the last chunk) are a second
            # head the parser builds by copying: held to the head's limit, plus a little a chunk.
            framing = self._received - self._payload
            if self._head_bytes is None and framing > MAX_HEAD_BYTES + self._payload // 16:
                self._refuse(400, "Chunk framing or trailers too large.")
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
        # The body's pace is checked from here; a request without one completes at once, which
        # stops the timer before it is ever due.
        self._payload = self._paced = self._received = 0
        self._flow.was_paused()
        self._body_timer = self.loop.call_later(self.body_timeout, self._check_body_pace)

    def on_body(self, body: bytes) -> None:
        self._payload += len(body)  # the payload alone: chunk sizes and extensions earn nothing
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._head_bytes = 0  # the next request's head, counted from its first byte
        self._stop_body_timer()
        super().on_message_complete()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._refuse(408, "Request headers not received in time.")

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _check_body_pace(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed, or handed to a WebSocket protocol
        received, self._paced = self._payload - self._paced, self._payload
        # Not the client's fault: the server stopped reading (an app slow to take the body, a
        # request queued behind another), or the client waits for "100 Continue".
        held_back = self._flow.was_paused() or self.cycle.waiting_for_100_continue
        if held_back or received >= MIN_BODY_RATE * self.body_timeout:
            self._body_timer = self.loop.call_later(self.body_timeout, self._check_body_pace)
            return
        # The reply is this request's own unless it is queued behind another one's.
        answer = not self.cycle.response_started and not self.pipeline
        if answer:
            self.cycle.scope.setdefault("extensions", {})[EDGE_STATUS] = {"status": 408}
        self._refuse(408, "Request body not received in time.", answer=answer)

    def _refuse_connection(self) -> None:
        refusals = self.refusals
        refusals.count += 1
        if self.loop.time() - refusals.logged_at >= REFUSALS_LOGGED_EVERY:
            get_logger("ragproxy").warning(
                "connections.refused",
                refused=refusals.count,
                max_connections=self.max_connections,
                effect="new connections get 503 until open ones close",
            )
            refusals.count = 0
            refusals.logged_at = self.loop.time()
        self._refuse(503, "Too many connections.")

    def _refuse(self, status: int, message: str, *, answer: bool | None = None) -> None:
        """Answer and close; a response already under way (to a pipelined request before
        this one) is only cut, not interleaved with this one. ``answer``: whether to answer, when
        the caller knows better than "no response under way"."""
        if self.transport.is_closing():
            return
        if answer is None:
            answer = self.cycle is None or self.cycle.response_complete
        if answer:
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


def connection_cap(wanted: int) -> int:
    """The most connections the open-file limit can hold, at most ``wanted``. The soft limit is
    raised to the hard one first, as Go's runtime does: a soft 1,024 is a common default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, (soft - FDS_RESERVED) // FDS_PER_CONNECTION))


def uvicorn_config(app: ASGIApp, settings: Settings, **options: Any) -> uvicorn.Config:
    cap = connection_cap(settings.max_connections)
    if cap < settings.max_connections:
        get_logger("ragproxy").warning(
            "max_connections.lowered",
            max_connections=cap,
            asked=settings.max_connections,
            fix="raise the open-file limit (LimitNOFILE= in a systemd unit, ulimit -n in a shell)",
        )
    limits = {
        "header_timeout": settings.header_timeout,
        "body_timeout": settings.body_timeout,
        "max_connections": cap,
        "refusals": _Refusals(),
    }
    protocol = type("EdgeProtocol", (EdgeProtocol,), limits)
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
