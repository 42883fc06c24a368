"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.di import NamedDependency
from litestar.response import Response

from proxy.api.openapi import documented
from proxy.errors import ProxyError, UpstreamOverloaded
from proxy.pipeline.services import Services


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@get("/readyz", operation_class=documented(upstream=False, errors={503: "The upstream does not answer."}))
async def readyz(services: NamedDependency[Services]) -> Response[dict[str, Any]]:
    """An upstream answers (with a pool, each one is asked; ``upstreams`` lists them)."""
    pool = services.pool
    answers = await pool.probe_all()
    ready = [
        (member, info) for member, info in zip(pool.members, answers, strict=True) if isinstance(info, dict)
    ]
    if not ready:
        first = answers[0]
        assert isinstance(first, ProxyError)
        body = UpstreamOverloaded(f"not ready: {first.message}", code=first.code).body()
        return Response(body, status_code=503)
    member, info = ready[0]
    reply: dict[str, Any] = {"status": "ready", "upstream": {"api": member.api, **info}}
    if len(pool.members) > 1:
        reply["upstreams"] = pool.state()
    return Response(reply)
