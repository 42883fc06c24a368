"""How ragproxy is served: uvicorn with its httptools parser, made to keep the authority of an
absolute-form request target (``GET http://host/path HTTP/1.1``), which uvicorn drops before
the app sees the request. RFC 9112 section 3.2.2 makes that authority, not the Host header, the
host a request is for, so the Host check (``security.py``) must see it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import uvicorn
from litestar.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.api.security import TARGET_AUTHORITY
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
