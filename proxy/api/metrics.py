"""``GET /metrics``: Prometheus counters and histograms fed by each request's log record, and
index, watcher and upstream gauges read when scraped. One registry per app, so several apps in
one process (the tests) keep their numbers apart. Labels stay bounded: the API, the route
template (never the raw path), the status code, the retrieval outcome, the collection."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
from litestar import get
from litestar.di import NamedDependency
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.api import apis
from proxy.api.openapi import documented
from proxy.index.service import IndexService
from proxy.pipeline.services import Services
from proxy.upstream.pool import UpstreamPool

# An upstream nothing was asked of for this long is probed by the scrape (PROBE_TIMEOUT at most).
PROBE_AFTER = 30.0
PROBE_TIMEOUT = 2.0
WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OWN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def api_of(path: str) -> str:
    """The API a request was for: a router's (``proxy/api/apis.py``), else the one whose paths
    it asked for."""
    return apis.api_of(path).name


def retrieval_outcome(record: dict[str, Any]) -> str | None:
    """What retrieval did for a chat request, from its log record; None if it was no chat (or
    failed before retrieval was decided)."""
    if record.get("rag"):
        if record.get("rag_sources"):
            return "injected"
        if record.get("rag_found"):
            return "found_but_cut"
        return "gated" if record.get("rag_gated") else "nothing_found"
    skipped = record.get("rag_skipped")
    if skipped is None:
        return None
    if skipped in ("no index", "completion") or skipped.startswith("off"):
        return "off"
    return "housekeeping_skipped"  # a title prompt, tool selection, fill-in-the-middle...


class Metrics:
    """The app's registry and the metrics requests feed."""

    def __init__(self, services: Callable[[], Services | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ragproxy_requests",
            "Requests answered, by API, route and HTTP status "
            "(endpoint 'unrouted': rejected before routing, or no such path).",
            ["api", "endpoint", "status"],
            registry=r,
        )
        self.first_byte = Histogram(
            "ragproxy_first_byte_seconds",
            "From the request's arrival to the first body byte sent to the client.",
            ["api"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.upstream_wait = Histogram(
            "ragproxy_upstream_wait_seconds",
            "From asking the upstream to its first body bytes.",
            ["api"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "ragproxy_overhead_seconds",
            "ragproxy's own part of the time to first byte (retrieval, "
            "context fitting, parsing): first byte minus upstream wait.",
            ["api"],
            buckets=OWN_BUCKETS,
            registry=r,
        )
        self.retrieval = Histogram(
            "ragproxy_retrieval_seconds",
            "Searching the index for one chat request.",
            buckets=OWN_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "ragproxy_prompt_tokens", "Prompt tokens the upstream reported reading.", ["api"], registry=r
        )
        self.completion_tokens = Counter(
            "ragproxy_completion_tokens", "Tokens the upstream reported generating.", ["api"], registry=r
        )
        self.outcomes = Counter(
            "ragproxy_retrieval_outcomes",
            "What retrieval did per chat request: injected (passages "
            "sent), found_but_cut (none fitted the window), gated (found, judged unrelated), "
            "nothing_found, housekeeping_skipped (a client's own task prompt), off.",
            ["outcome"],
            registry=r,
        )
        self.passages = Counter(
            "ragproxy_passages_injected", "Passages sent to the upstream with chat requests.", registry=r
        )
        r.register(StateCollector(services))

    def observe(self, scope: Any, status: int, first_byte: float | None, record: dict[str, Any]) -> None:
        """One finished request: ``first_byte`` in seconds after arrival (None: no body sent)."""
        handler = scope.get("route_handler")
        api = handler.opt.get("api", "other") if handler is not None else api_of(scope["path"])
        endpoint = scope.get("path_template") or "unrouted"
        self.requests.labels(api, endpoint, str(status)).inc()
        if first_byte is not None:
            self.first_byte.labels(api).observe(first_byte)
        wait_ms = record.get("upstream_wait_ms")
        if wait_ms is not None:
            self.upstream_wait.labels(api).observe(wait_ms / 1000)
            if first_byte is not None:
                self.overhead.labels(api).observe(max(first_byte - wait_ms / 1000, 0.0))
        if record.get("retrieval_ms") is not None:
            self.retrieval.observe(record["retrieval_ms"] / 1000)
        if record.get("prompt_tokens"):
            self.prompt_tokens.labels(api).inc(record["prompt_tokens"])
        if record.get("completion_tokens"):
            self.completion_tokens.labels(api).inc(record["completion_tokens"])
        outcome = retrieval_outcome(record)
        if outcome is not None:
            self.outcomes.labels(outcome).inc()
            self.passages.inc(record.get("rag_sources") or 0)


class StateCollector(Collector):
    """Read at scrape time: the index's collections (``Store.status()``), the watcher, the
    embedding worker and the upstream's last known state."""

    def __init__(self, services: Callable[[], Services | None]) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        services = self.services()
        if services is None:  # not started yet, or stopped
            return
        yield from _pool_metrics(services.pool)
        if services.index is not None:
            yield from _index_metrics(services.index)
        if (watcher := services.watcher) is not None:
            yield GaugeMetricFamily(
                "ragproxy_watch_queue_depth",
                "File changes waiting to be applied.",
                value=watcher.queue_depth(),
            )
            yield CounterMetricFamily(
                "ragproxy_watch_rescans",
                "Collections scanned whole (start, storm, .gitignore change, verifying scan).",
                value=watcher.rescans,
            )
            yield CounterMetricFamily(
                "ragproxy_watch_storms",
                "Event storms that overflowed the queue into a rescan.",
                value=watcher.storms,
            )


def _pool_metrics(pool: UpstreamPool) -> Iterator[Metric]:
    known = [m.up for m in pool.members if m.up is not None]
    if known:
        yield GaugeMetricFamily(
            "ragproxy_upstream_up",
            "1 if an upstream answered the last request or probe asked of it (whatever the HTTP "
            "status), 0 if none could be reached.",
            value=int(any(known)),
        )
    up = GaugeMetricFamily(
        "ragproxy_upstream_member_up",
        "Per upstream of the pool: 1 if it answered the last request, probe or health check "
        "(whatever the HTTP status), 0 if it could not be reached.",
        labels=["upstream"],
    )
    busy = GaugeMetricFamily(
        "ragproxy_upstream_in_flight", "Per upstream: requests it is serving now.", labels=["upstream"]
    )
    for member in pool.members:
        if member.up is not None:
            up.add_metric([member.base], int(member.up))
        busy.add_metric([member.base], member.in_flight)
    yield up
    yield busy


def _index_metrics(index: IndexService) -> Iterator[Metric]:
    families = {
        "documents": GaugeMetricFamily(
            "ragproxy_index_documents", "Documents indexed.", labels=["collection"]
        ),
        "chunks": GaugeMetricFamily("ragproxy_index_chunks", "Chunks indexed.", labels=["collection"]),
        "pending_vectors": GaugeMetricFamily(
            "ragproxy_index_vectors_pending",
            "Chunks not embedded yet (found by keyword only).",
            labels=["collection"],
        ),
        "skipped": GaugeMetricFamily(
            "ragproxy_index_skipped_files",
            "Files left out (binary, oversized, unreadable...).",
            labels=["collection"],
        ),
        "last_update": GaugeMetricFamily(
            "ragproxy_index_last_update_timestamp_seconds",
            "When a document of the collection last changed, Unix time.",
            labels=["collection"],
        ),
        "indexed_here": GaugeMetricFamily(
            "ragproxy_index_indexed_here",
            "1 if this process indexes the collection (on a shared PostgreSQL index, one replica does).",
            labels=["collection"],
        ),
    }
    for collection in index.store.status()["collections"]:
        name = collection["name"]
        for key, family in families.items():
            value = collection[key]
            if key == "skipped":
                value = len(value)
            if value is not None:
                family.add_metric([name], float(value))
    yield from families.values()
    yield CounterMetricFamily(
        "ragproxy_embedded_chunks",
        "Chunks the embedding worker gave vectors since start.",
        value=index.embedded_chunks(),
    )


@get("/metrics", operation_class=documented(upstream=False))
async def metrics(services: NamedDependency[Services], registry: NamedDependency[Metrics]) -> Response[bytes]:
    """The Prometheus text format. An upstream nothing asked of lately is probed first, so an
    idle proxy still tells when its upstream went away."""
    pool = services.pool
    if any(time.monotonic() - member.seen_at > PROBE_AFTER for member in pool.members):
        await pool.probe_all(time.monotonic() + PROBE_TIMEOUT)  # the gauges say what failed
    body = await anyio.to_thread.run_sync(generate_latest, registry.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
