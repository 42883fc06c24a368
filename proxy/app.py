"""The application factory: a Router per client API, ragproxy's own routes, and a lifespan that
builds the ``Services`` every request is served with and owns every resource."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.types import ASGIApp

from proxy.api import anthropic, apis, completions, health, mcp, metrics, ollama, openai, rag, responses, ui
from proxy.api.metrics import Metrics
from proxy.api.requestlog import RecentRequests, RequestLogMiddleware
from proxy.api.security import SecurityMiddleware, check_bind
from proxy.index.replicas import Claims
from proxy.index.service import IndexService
from proxy.index.watcher import FolderWatcher
from proxy.logging import get_logger
from proxy.pipeline.context import WindowCache
from proxy.pipeline.retrieval import make_reranker
from proxy.pipeline.services import Services
from proxy.settings import Settings
from proxy.upstream.pool import UpstreamPool

log = get_logger("ragproxy.app")


def _warm(service: IndexService) -> None:
    """The index read into memory after start, so the first question does not wait for it; then
    the collections' own relevance bars measured (``index/calibration.py``)."""
    try:
        service.store.warm()
    except Exception as exc:  # closed meanwhile, or unreadable: the first search reports it
        log.debug("index.warm_failed", error=str(exc))
        return
    service.calibration.start(service)


def _services(state: State) -> Services:
    services: Services = state.services
    return services


def _metrics(state: State) -> Metrics:
    metrics: Metrics = state.metrics
    return metrics


def _recent(state: State) -> RecentRequests:
    recent: RecentRequests = state.recent
    return recent


def create_app(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> Litestar:
    """``transport`` replaces the network under the upstream clients (fault injection only)."""

    @asynccontextmanager
    async def services(app: Litestar) -> AsyncIterator[None]:
        """The upstreams' clients (their health checks running beside the app), the reranker,
        and the index: with --docs, the folders indexed (a reconciliation scan first) and kept
        current; without, an index built before (``ragproxy index``) searched as it is. Then
        ``app.state.services``, what every request is served with."""
        pool = UpstreamPool(settings, transport)
        reranker = make_reranker(settings)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(pool.watch)
                try:
                    base = Services(settings, pool, WindowCache(), reranker)
                    async with live_index(app, base):
                        yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            await pool.aclose()
            close = getattr(reranker, "close", None)
            if close is not None:
                close()

    @asynccontextmanager
    async def live_index(app: Litestar, base: Services) -> AsyncIterator[None]:
        app.state.services = base
        if not settings.docs and not settings.index_exists():
            log.info("index.none", db=str(settings.db_path))
            yield
            return
        service = IndexService(settings)
        watcher = None
        claims: Claims | None = None
        try:
            if settings.docs:
                service.add_folders(settings.doc_folders())
                service.worker.start()
                shared = settings.db_url is not None  # replicas share it: index what this one claims
                watcher = FolderWatcher(
                    service.indexer,
                    verify_every=settings.verify_interval * 3600,
                    held=set() if shared else None,
                )
                watcher.start()
                app.state.services = dataclasses.replace(base, watcher=watcher)
                if shared:
                    claims = Claims(service.store, service.indexer, watcher)
                    await anyio.to_thread.run_sync(claims.claim)  # the first round before serving
                    claims.start()
            else:
                await anyio.to_thread.run_sync(service.has_vectors)  # loads the embedder before any question
            app.state.services = dataclasses.replace(base, index=service, watcher=watcher)
            threading.Thread(target=_warm, args=(service,), name="ragproxy-warm", daemon=True).start()
            yield
        finally:
            app.state.services = base
            if claims is not None:
                claims.stop()
            if watcher is not None:
                watcher.stop()
            service.close()

    state = State({"settings": settings})
    state.metrics = Metrics(lambda: state.get("services"))
    state.recent = RecentRequests()
    # one per app: its manager runs once
    mcp_endpoint, mcp_sessions = mcp.http_endpoint(settings, lambda: _services(state))

    return Litestar(
        route_handlers=[
            # the client APIs: a router each (its routes, its error shape: proxy/api/apis.py)
            openai.router,
            responses.router,
            anthropic.router,
            completions.router,
            rag.router,
            ollama.router,
            apis.router(apis.MCP, [mcp_endpoint]),
            # ragproxy's own
            health.healthz,
            health.readyz,
            metrics.metrics,
            ui.status_page,
        ],
        lifespan=[services, mcp_sessions],
        state=state,
        dependencies={
            "services": Provide(_services, sync_to_thread=False),
            "registry": Provide(_metrics, sync_to_thread=False),
            "recent": Provide(_recent, sync_to_thread=False),
        },
        exception_handlers=apis.error_handlers(),  # what no router answers: by the API of the path
        request_max_body_size=settings.max_body_size,
        openapi_config=OpenAPIConfig(
            title="ragproxy", version="1", path="/schema", render_plugins=[JsonRenderPlugin()]
        ),
        logging_config=None,
    )


def create_asgi(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> ASGIApp:
    """The app as served: every request, routed or not, gets its log line and request id, and
    passes the Host, CORS and API key checks, and is counted in the app's metrics (and kept
    among the recent requests of the status page)."""
    check_bind(settings)
    app = create_app(settings, transport)
    return RequestLogMiddleware(SecurityMiddleware(app, settings), app.state.metrics, app.state.recent)
