"""MCP over the index at ``/mcp`` of the running server (streamable HTTP), where the API key's
collections limit what every tool can see, as on the HTTP APIs. The tools and the SDK live in
``proxy.api.mcp_tools``, loaded on the first request to ``/mcp``: a server nobody asks over MCP
never pays for the SDK (~0.8 s at start, ~30 MB)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import orjson
from litestar import Litestar, asgi
from litestar.handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send

from proxy.errors import error_body
from proxy.logging import get_logger
from proxy.pipeline.services import Services
from proxy.settings import Settings

log = get_logger("ragproxy.mcp")


def http_endpoint(
    settings: Settings, services: Callable[[], Services]
) -> tuple[ASGIRouteHandler, Callable[[Litestar], AbstractAsyncContextManager[None]]]:
    """The ``/mcp`` route and the lifespan that runs its session manager once the first request
    needs it. Stateless, one JSON body per POST: every request carries its own key, checked by
    SecurityMiddleware like any other, and the tools read that request's collections."""
    sessions: dict[str, Any] = {}  # the lifespan's events, then the manager (or why there is none)

    @asgi("/mcp", is_mount=True, copy_scope=True)
    async def mcp_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/":  # a mount also gets /mcpx and /mcp/x (as "x/", "/x/"): not MCP
            await _refuse(send, 404, "Not Found")
        elif scope.get("method") != "POST":  # no server-sent event stream: stateless, no sessions
            await _refuse(send, 405, "POST JSON-RPC messages to /mcp (there is no event stream)")
        else:
            if "manager" not in sessions:
                sessions["needed"].set()
                await sessions["ready"].wait()
            if sessions.get("manager") is None:
                await _refuse(send, 500, f"MCP is not available: {sessions.get('error')}")
                return
            await sessions["manager"].handle_request(scope, receive, send)

    @asynccontextmanager
    async def mcp_sessions(app: Litestar) -> AsyncIterator[None]:
        sessions.update(needed=anyio.Event(), ready=anyio.Event())

        async def run() -> None:  # in this lifespan's task group: a mounted app's own never runs
            await sessions["needed"].wait()
            try:
                # in a thread: importing the MCP SDK takes about half a second
                manager = await anyio.to_thread.run_sync(_http_sessions, settings, services)
            except Exception as exc:
                log.error("mcp.unavailable", error=str(exc))
                sessions.update(manager=None, error=str(exc))
                sessions["ready"].set()
                return
            async with manager.run():
                sessions["manager"] = manager
                sessions["ready"].set()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            try:
                yield
            finally:
                group.cancel_scope.cancel()

    return mcp_endpoint, mcp_sessions


def _http_sessions(settings: Settings, services: Callable[[], Services]) -> Any:
    from proxy.api.mcp_tools import http_sessions

    return http_sessions(settings, services)


async def _refuse(send: Send, status: int, message: str) -> None:
    headers = [(b"content-type", b"application/json")]
    if status == 405:
        headers.append((b"allow", b"POST"))
    kind = {404: "not_found_error", 500: "api_error"}.get(status, "invalid_request_error")
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send(
        {"type": "http.response.body", "body": orjson.dumps(error_body(message, kind)), "more_body": False}
    )
