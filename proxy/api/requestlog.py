"""One log line per request, written when the response has ended (streams included)."""

from __future__ import annotations

import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from proxy.logging import get_logger

if TYPE_CHECKING:
    from proxy.api.metrics import Metrics

log = get_logger("ragproxy.request")
RECORD_KEY = "ragproxy_record"
SOURCES_KEY = "ragproxy_sources"  # the passages a chat sent: for the status page, never logged
# In scope["extensions"], set by server.py when it answered the request itself (a body that
# stopped arriving): the status the client got, not the app's answer to the broken-off body.
EDGE_STATUS = "ragproxy.edge_status"
RECENT_REQUESTS = 50
# Not kept among the recent requests: the status page itself, and probes and scrapes, which
# would push the chats out of the ring.
UNLISTED = ("/ui", "/healthz", "/readyz", "/metrics")


def request_record(scope: Scope) -> dict[str, Any]:
    """Fields a handler adds to the request's log line (model, token counts, ...)."""
    return scope.setdefault("state", {}).setdefault(RECORD_KEY, {})  # type: ignore[no-any-return]


def note_sources(scope: Scope, sources: list[dict[str, Any]]) -> None:
    """The passages a chat sent upstream (file, heading, score), kept for the recent requests."""
    scope.setdefault("state", {})[SOURCES_KEY] = sources


class RecentRequests:
    """The last requests as they ended, newest first: a bounded ring kept in memory only."""

    def __init__(self, size: int = RECENT_REQUESTS) -> None:
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, entry: dict[str, Any]) -> None:
        self._ring.append(entry)  # deque.append is atomic: no lock for the event loop's threads

    def newest_first(self) -> list[dict[str, Any]]:
        return list(reversed(self._ring))


class RequestLogMiddleware:
    def __init__(
        self, app: ASGIApp, metrics: Metrics | None = None, recent: RecentRequests | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.recent = recent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else secrets.token_hex(8)
        record = request_record(scope)
        path = scope["path"]  # as asked: a mounted app (/mcp) is handed the path inside the mount
        started = time.perf_counter()
        status = 0
        first_byte: float | None = None

        async def send_logged(message: Message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body" and first_byte is None and message.get("body"):
                first_byte = time.perf_counter()
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_logged)
        finally:
            ended = time.perf_counter()
            extensions: dict[str, Any] = scope.get("extensions") or {}
            if EDGE_STATUS in extensions:
                status = extensions[EDGE_STATUS]["status"]
            fields: dict[str, Any] = {
                "method": scope.get("method"),
                "path": path,
                "status": status,
                "duration_ms": round((ended - started) * 1000, 2),
            }
            if first_byte is not None:
                fields["first_byte_ms"] = round((first_byte - started) * 1000, 2)
            fields.update(record)
            log.info("request", **fields)
            if self.recent is not None and not path.startswith(UNLISTED):
                sources = scope.get("state", {}).get(SOURCES_KEY) or []
                self.recent.add({"time": time.time(), **fields, "sources": sources})
            if self.metrics is not None:
                self.metrics.observe(
                    {**scope, "path": path},
                    status,
                    None if first_byte is None else first_byte - started,
                    record,
                )
            structlog.contextvars.unbind_contextvars("request_id")
