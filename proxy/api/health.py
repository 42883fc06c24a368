"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.response import Response

from proxy.api.openapi import documented
from proxy.errors import ProxyError, UpstreamOverloaded
from proxy.upstream.client import Upstream


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@get("/readyz", operation_class=documented(upstream=False, errors={503: "The upstream does not answer."}))
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """The upstream answers."""
    upstream: Upstream = request.app.state.upstream
    try:
        info = await upstream.probe()
    except ProxyError as exc:
        body = UpstreamOverloaded(f"not ready: {exc.message}", code=exc.code).body()
        return Response(body, status_code=503)
    return Response({"status": "ready", "upstream": {"api": upstream.api, **info}})
