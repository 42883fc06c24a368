"""How ragproxy is served: uvicorn with its httptools parser, made to keep the authority of an
absolute-form request target (``GET http://host/path HTTP/1.1``), which uvicorn drops before
the app sees the request. RFC 9112 section 3.2.2 makes that authority, not the Host header, the
host a request is for, so the Host check (``security.py``) must see it."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from litestar.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.api.security import TARGET_AUTHORITY
from proxy.errors import ConfigError
from proxy.settings import Settings


class TargetKeepingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the authority of an absolute-form target in the scope's
    ``extensions``."""

    def on_headers_complete(self) -> None:
        if not self.url.startswith(b"/") and self.url != b"*":
            authority = urlsplit(self.url.decode("latin-1")).netloc
            self.scope.setdefault("extensions", {})[TARGET_AUTHORITY] = {"authority": authority}
        super().on_headers_complete()


def uvicorn_config(app: ASGIApp, settings: Settings, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=TargetKeepingProtocol,
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
