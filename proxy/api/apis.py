"""The client APIs ragproxy speaks, one record each (``Api``): the name metrics and logs use, the
paths it owns, and the shape its errors take. Each wire's module makes its Litestar ``Router``
from its record (``router``), with exception handlers that answer in that shape; what reaches
no route (a 404, a key refused before routing) is answered in the shape of the API whose paths
it asked for (``api_of``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, Router
from litestar.exceptions import HTTPException
from litestar.types import ControllerRouterHandler, ExceptionHandlersMap

from proxy.errors import ErrorShape, ProxyError, error_reply
from proxy.logging import get_logger

log = get_logger("ragproxy.app")

AnyRequest = Request[Any, Any, Any]

_TYPES = {  # the OpenAI error type of an HTTP error Litestar raises itself
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}


@dataclass(frozen=True)
class Api:
    name: str
    paths: tuple[str, ...]  # each path, and what lies under it ("/x" owns "/x" and "/x/...")
    errors: ErrorShape

    def owns(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.paths)


OPENAI = Api("openai", ("/v1/chat", "/v1/models", "/v1/embeddings"), "openai")
RESPONSES = Api("responses", ("/v1/responses",), "openai")
ANTHROPIC = Api("anthropic", ("/v1/messages",), "anthropic")
COMPLETIONS = Api("completions", ("/v1/completions",), "openai")
RAG = Api("rag", ("/v1/rag",), "openai")
MCP = Api("mcp", ("/mcp",), "openai")
OLLAMA = Api("ollama", ("/api",), "ollama")  # and "/": "Ollama is running"
OTHER = Api("other", (), "openai")  # the probes, metrics and the status page
APIS = (OPENAI, RESPONSES, ANTHROPIC, COMPLETIONS, RAG, MCP, OLLAMA)


def api_of(path: str) -> Api:
    """The API whose paths ``path`` is among (``OTHER`` if none)."""
    if path == "/":
        return OLLAMA
    return next((api for api in APIS if api.owns(path)), OTHER)


def router(api: Api, handlers: Sequence[ControllerRouterHandler]) -> Router:
    """The API's routes, their errors in its shape, its name in each route's ``opt``."""
    return Router(
        path="/",
        route_handlers=handlers,
        exception_handlers=error_handlers(api.errors),
        opt={"api": api.name},
    )


def error_handlers(shape: ErrorShape | None = None) -> ExceptionHandlersMap:
    """Exception handlers answering in ``shape``; None: in the shape of the API of the path."""

    def reply(
        request: AnyRequest,
        status: int,
        message: str,
        kind: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Any = None,
    ) -> Response[Any]:
        status, body = error_reply(
            shape or api_of(request.url.path).errors, status, message, kind, param=param, code=code
        )
        return Response(body, status_code=status, headers=headers)

    def proxy_error(request: AnyRequest, exc: ProxyError) -> Response[Any]:
        return reply(request, exc.status, exc.message, exc.type, param=exc.param, code=exc.code)

    def http_error(request: AnyRequest, exc: HTTPException) -> Response[Any]:
        status = exc.status_code
        code = "request_too_large" if status == 413 else None
        kind = _TYPES.get(status, "api_error")
        return reply(request, status, str(exc.detail), kind, code=code, headers=exc.headers)

    def unexpected_error(request: AnyRequest, exc: Exception) -> Response[Any]:
        log.error("request.failed", exc_info=exc)
        message = f"internal error: {type(exc).__name__}"
        return reply(request, 500, message, "api_error", code="internal_error")

    return {ProxyError: proxy_error, HTTPException: http_error, Exception: unexpected_error}
