"""``GET /ui/``: a status and search page for a person, server-rendered HTML that needs no
JavaScript: the collections, the upstream and its models, the last requests and what retrieval did
for them, and a search box that shows what a question would retrieve (the same dry run as
``/v1/rag/preview``). Everything taken from files, requests or the upstream is HTML-escaped."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from html import escape
from typing import Any

import anyio
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.response import Redirect, Response

from proxy.api.exchange import caller
from proxy.api.requestlog import RecentRequests
from proxy.api.schemas import validate_chat
from proxy.api.security import key_collections
from proxy.errors import ProxyError
from proxy.index.service import IndexService
from proxy.pipeline.call import ChatCall
from proxy.pipeline.chat import augment, prepare_chat
from proxy.pipeline.conversation import message_text
from proxy.pipeline.services import Services
from proxy.printable import printable
from proxy.upstream.client import Upstream

AnyRequest = Request[Any, Any, Any]
UPSTREAM_WAIT = 2.0  # the page never waits longer than this for the upstream's models
MAX_MODELS = 20  # models listed with their context windows
MAX_QUERY = 1000  # characters of a search question
HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:72rem;padding:0 1rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eee;vertical-align:top}
.num{text-align:right}.muted{color:#777}.bad{color:#a00}.ok{color:#070}
input[type=search]{width:60%;padding:.3rem}code{font-size:.85rem}
"""


@get("/ui", include_in_schema=False)
async def status_page(
    request: AnyRequest, services: NamedDependency[Services], recent: NamedDependency[RecentRequests]
) -> Response[str] | Redirect:
    """``/ui`` redirects to ``/ui/`` (so the page's relative links work); ``?q=`` searches."""
    if not request.scope.get("raw_path", b"/").endswith(b"/"):  # routing drops the slash from path
        return Redirect("/ui/" + (f"?{request.url.query}" if request.url.query else ""))
    allowed = key_collections(request.scope)
    query = str(request.query_params.get("q") or "").strip()[:MAX_QUERY]
    parts = [
        f"<h1>ragproxy</h1>{_search_form(query)}",
        await _search_section(request, services, query) if query else "",
        await _collections_section(services.index, allowed),
        await _upstream_section(services),
        # requests of every collection: only for a key that may read them all
        _recent_section(recent, services.settings.log_content) if allowed is None else "",
    ]
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ragproxy</title>'
        f'<meta name="viewport" content="width=device-width"><style>{STYLE}</style></head>'
        f"<body>{''.join(parts)}</body></html>"
    )
    return Response(page, media_type="text/html; charset=utf-8", headers=HEADERS)


def _search_form(query: str) -> str:
    return (
        '<form method="get" action="/ui/" role="search"><label for="q">Question</label> '
        f'<input type="search" id="q" name="q" value="{escape(query)}" '
        'placeholder="What would this question retrieve?"> <button type="submit">Search</button></form>'
    )


async def _search_section(request: AnyRequest, services: NamedDependency[Services], query: str) -> str:
    """The dry run of a chat asking ``query`` with the default model: retrieval, the relevance
    gate and context fitting as a chat would do them; the model is not called."""
    settings = services.settings
    body = {"model": settings.model, "messages": [{"role": "user", "content": query}]}
    call: ChatCall = prepare_chat(validate_chat(body, settings))
    try:
        await augment(call, caller(request, "openai"), services)
    except ProxyError as exc:
        return f'<h2>Search</h2><p class="bad">{escape(exc.message)}</p>'
    rag = call.rag
    if not rag.attempted:
        return (
            f"<h2>Search</h2><p>Retrieval did not run: {_name(rag.skipped or rag.control.reason or '')}</p>"
        )
    rows = "".join(
        f"<tr><td>{p.number}</td><td><code>{_name(p.collection)}:{_name(p.path)}</code></td>"
        f"<td>{_name(p.heading or '')}</td><td class=num>{p.score:.4f}</td>"
        f'<td class="ok">sent</td><td>{_name(_clip(" ".join(p.text.split()), 300))}</td></tr>'
        for p in rag.passages
    )
    notes = [f"{rag.found} passage(s) found, {len(rag.passages)} sent"]
    if rag.gated:
        notes.append(f"{rag.gated} chunk(s) held back by the relevance gate as unrelated")
    if rag.cut():
        notes.append(f"cut for room: {rag.cut()}")
    table = (
        "<table><tr><th>#</th><th>Source</th><th>Heading</th><th class=num>Score</th><th>Gate</th>"
        f"<th>Text</th></tr>{rows}</table>"
        if rows
        else "<p>Nothing would be sent with this question.</p>"
    )
    return (
        f'<h2>Search</h2><p id="search-summary">{escape("; ".join(notes))} '
        f'<span class="muted">(retrieval {rag.retrieval_ms or 0:.0f} ms, window {rag.window or "?"})'
        f"</span></p>{table}"
    )


async def _collections_section(index: IndexService | None, allowed: tuple[str, ...] | None) -> str:
    if index is None:
        return "<h2>Collections</h2><p>No index: start with <code>--docs DIR</code>.</p>"
    status = await anyio.to_thread.run_sync(index.store.status)
    collections = [c for c in status["collections"] if allowed is None or c["name"] in allowed]
    rows = []
    for c in collections:
        skipped = "".join(
            f"<li><code>{_name(s['path'])}</code>: {_name(s['reason'])}</li>" for s in c["skipped"]
        )
        rows.append(
            f"<tr><td><b>{_name(c['name'])}</b></td><td><code>{_name(c['root'])}</code></td>"
            f"<td class=num>{c['documents']}</td><td class=num>{c['chunks']}</td>"
            f"<td class=num>{c['pending_vectors']}</td><td>{_when(c['last_update'])}</td>"
            f"<td>{f'<ul>{skipped}</ul>' if skipped else '<span class=muted>none</span>'}</td></tr>"
        )
    embedder = escape(f"{status['embedder'] or 'none yet'} ({status['dim'] or '?'} dimensions)")
    bars = [
        f"<li><b>{_name(c['name'])}</b>, {escape(line)}</li>"
        for c in collections
        for line in index.calibration.described(c["name"])
    ]
    calibration = index.calibration
    calibrated = (
        f"<p>Relevance bars measured on the collections themselves:</p><ul>{''.join(bars)}</ul>"
        if bars
        else ""
    )
    if calibration.everyday is not None and calibration.measured_at is not None:
        calibrated += (
            f"<p>Relevance gate calibrated {_when(calibration.measured_at)}: each question is held "
            f"against {len(calibration.everyday.prompts)} everyday prompts.</p>"
        )
    return (
        f"<h2>Collections</h2><p>Embedder {embedder}; index {status['db_bytes'] / 1e6:.1f} MB.</p>"
        "<table><tr><th>Name</th><th>Folder</th><th class=num>Documents</th><th class=num>Chunks</th>"
        "<th class=num>Pending vectors</th><th>Last update</th><th>Skipped files</th></tr>"
        f"{''.join(rows)}</table>{calibrated}"
    )


async def _upstream_section(services: Services) -> str:
    pool = services.pool
    deadline = time.monotonic() + UPSTREAM_WAIT
    title = "<h2>Upstream</h2>" if len(pool.members) == 1 else f"<h2>Upstreams ({len(pool.members)})</h2>"
    sections = [await _one_upstream(services, upstream, deadline) for upstream in pool.members]
    return title + "".join(sections)


async def _one_upstream(services: Services, upstream: Upstream, deadline: float) -> str:
    pool = services.pool
    busy = f", {upstream.in_flight} in flight" if len(pool.members) > 1 else ""
    head = f"<p><code>{escape(upstream.base)}</code> ({escape(upstream.api)} API{busy})"
    try:
        names = await upstream.model_names(deadline)
    except ProxyError as exc:
        return f'{head}: <span class="bad">unreachable</span> ({escape(exc.message)})</p>'
    rows = []
    for name in names[:MAX_MODELS]:
        info = await services.windows.info(pool, name, deadline)
        window = f"{info.window:,}" if info.window else "?"
        rows.append(f"<tr><td><code>{escape(name)}</code></td><td class=num>{window}</td></tr>")
    more = f"<p class=muted>and {len(names) - MAX_MODELS} more</p>" if len(names) > MAX_MODELS else ""
    return (
        f'{head}: <span class="ok">answers</span></p>'
        "<table><tr><th>Model</th><th class=num>Context window (tokens)</th></tr>"
        f"{''.join(rows)}</table>{more}"
    )


def _recent_section(recent: RecentRequests, log_content: bool) -> str:
    rows = []
    for r in recent.newest_first():
        sources = "".join(
            f"<li><code>{_name(s.get('collection'))}:{_name(s.get('file'))}</code> "
            f"{_name(s.get('heading') or '')} <span class=muted>{s.get('score')}</span></li>"
            for s in r.get("sources") or []
        )
        retrieval = _retrieval(r)
        tokens = "/".join(
            str(r.get(k) if r.get(k) is not None else "-") for k in ("prompt_tokens", "completion_tokens")
        )
        status_class = "bad" if r["status"] >= 400 or r["status"] == 0 else ""
        rows.append(
            f"<tr><td>{_when(r['time'], seconds=True)}</td><td>{escape(str(r.get('method')))} "
            f"<code>{_name(r['path'])}</code></td><td>{_name(r.get('model') or '')}</td>"
            f'<td class="{status_class}">{r["status"]}</td><td class=num>{r["duration_ms"]:.0f} ms</td>'
            f"<td>{escape(_query(r) if log_content else '')}</td><td>{escape(retrieval)}"
            f"{f'<ul>{sources}</ul>' if sources else ''}</td><td>{tokens}</td></tr>"
        )
    body = (
        "<table><tr><th>Ended</th><th>Request</th><th>Model</th><th>Status</th><th class=num>Took</th>"
        "<th>Question</th><th>Retrieval</th><th>Tokens in/out</th></tr>"
        f"{''.join(rows)}</table>"
        if rows
        else "<p>None yet.</p>"
    )
    note = "" if log_content else " <span class=muted>(questions are shown with --log-content only)</span>"
    return f"<h2>Recent requests</h2><p>The last {len(rows)}, newest first.{note}</p>{body}"


def _retrieval(record: dict[str, Any]) -> str:
    if not record.get("rag"):
        skipped = record.get("rag_skipped")
        return f"skipped: {skipped}" if skipped else ""
    text = f"{record.get('rag_found') or 0} found, {record.get('rag_sources') or 0} sent"
    if record.get("rag_gated"):
        text += f", {record['rag_gated']} gated"
    if record.get("rag_cut"):
        text += f", cut for room ({record['rag_cut']})"
    return text


def _query(record: dict[str, Any]) -> str:
    """The last user message, when the request's messages were kept (``--log-content``)."""
    messages = record.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _clip(message_text(message), 200)
    return ""


def _name(value: object) -> str:
    """A name (file, folder, collection, heading, skip reason) escaped for HTML, its control and
    bidi characters shown as escapes: U+202E would otherwise turn the rest of the cell around."""
    return escape(printable(str(value)))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(timestamp: float | None, *, seconds: bool = False) -> str:
    if not timestamp:
        return "-"
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")
