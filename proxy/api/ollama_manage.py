"""Ollama's model management (pull, push, create, copy, delete, blobs): forwarded untouched to an
Ollama upstream, the answer relayed as it streams. With a pool, to one Ollama server: one that
has the model named, if one does."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

import anyio
import httpx
import orjson
from litestar import Request, route
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.types import ASGIApp, Receive, Scope, Send

from proxy.api.openapi import documented
from proxy.errors import BadRequest, ProxyError
from proxy.pipeline.services import Services
from proxy.upstream.client import Upstream, map_transport_error

AnyRequest = Request[Any, Any, Any]
JSON = [(b"content-type", b"application/json; charset=utf-8")]


class ForwardResponder:
    """Any other /api/ request, forwarded untouched to an Ollama upstream and its answer relayed
    as it streams (pull, push, create, copy, delete, blobs)."""

    def __init__(self, upstream: Upstream, request: AnyRequest, body: bytes) -> None:
        self._upstream, self._method, self._body = upstream, request.method, body
        # the path as the client encoded it: decoded, "%09" or "%2F" would not survive the trip
        raw_path = request.scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(request.url.path)
        self._path = path + (f"?{request.url.query}" if request.url.query else "")
        self._content_type = request.headers.get("content-type")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {"content-type": self._content_type} if self._content_type else {}
        http = self._upstream.http
        try:
            request = http.build_request(
                self._method, self._path, content=self._body or None, headers=headers
            )
        except httpx.InvalidURL as exc:
            await self._send_error(send, BadRequest(f"the path cannot be forwarded: {exc}"))
            return
        async with anyio.create_task_group() as tasks:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tasks.cancel_scope.cancel()

            tasks.start_soon(watch)
            try:
                response = await self._upstream.send(request, stream=True)
            except httpx.HTTPError as exc:
                await self._send_error(send, map_transport_error(exc, self._upstream.base))
                tasks.cancel_scope.cancel()
                return
            try:
                kept: list[tuple[bytes, bytes]] = [
                    (name.encode(), value.encode())
                    for name, value in response.headers.items()
                    if name.lower() in ("content-type", "content-disposition", "location")
                ]
                await send({"type": "http.response.start", "status": response.status_code, "headers": kept})
                async for part in response.aiter_raw():
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
                tasks.cancel_scope.cancel()

    @staticmethod
    async def _send_error(send: Send, error: ProxyError) -> None:
        await send({"type": "http.response.start", "status": error.status, "headers": JSON})
        await send(
            {"type": "http.response.body", "body": orjson.dumps({"error": error.message}), "more_body": False}
        )


@route(
    "/api/{rest:path}",
    http_method=["GET", "POST", "PUT", "DELETE", "HEAD"],
    status_code=200,
    operation_class=documented(errors={501: "The upstream is not Ollama."}),
)
async def forward(request: AnyRequest, services: NamedDependency[Services], rest: FromPath[str]) -> ASGIApp:
    pool = services.pool
    if not pool.native_ollama():
        raise ProxyError(
            f"/api{rest} is not available: the upstream is an OpenAI-compatible server, not Ollama",
            status=501,
        )
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    if not _within_api(raw_path.decode("latin-1")):
        raise BadRequest("the path has '.' or '..' segments: only /api/ paths are forwarded")
    body = await request.body()
    return ForwardResponder(pool.candidates(_named_model(body), ollama=True)[0], request, body)


def _within_api(path: str) -> bool:
    """The path, as the client sent it and as the upstream would decode it, stays under /api/:
    the upstream's client (and Ollama) resolve dot segments, so ``/api/../v1/chat/completions``
    would reach the upstream's other API, past every check of ragproxy's own."""
    segments = unquote(path.split("?", 1)[0]).replace("\\", "/").split("/")
    return path.startswith("/api/") and not any(segment in (".", "..") for segment in segments)


def _named_model(body: bytes) -> str | None:
    """The model a model-management request names (it goes to an upstream that has it)."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    name = data.get("model") or data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None
