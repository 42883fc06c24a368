"""Dry runs of retrieval: ``POST /v1/rag/search`` (the chunks a query finds, with scores) and
``POST /v1/rag/preview`` (what a chat request would send upstream, without calling the model)."""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Request, post
from litestar.di import NamedDependency

from proxy.api import apis
from proxy.api.exchange import caller
from proxy.api.openapi import OPENAI_CHAT, RAG_SEARCH, documented
from proxy.api.requestlog import request_record
from proxy.api.schemas import read_checked, read_json_object, validate_chat
from proxy.api.security import key_collections
from proxy.errors import BadRequest, ConfigError, NotFound, ProxyError
from proxy.index.service import IndexService
from proxy.pipeline.chat import augment, check_collections, prepare_chat, visible_collections
from proxy.pipeline.controls import MAX_TOP_K
from proxy.pipeline.conversation import message_text
from proxy.pipeline.services import Services
from proxy.text import estimate_tokens

AnyRequest = Request[Any, Any, Any]
MODES = ("hybrid", "keyword", "vector")
INDEX_ERRORS = {
    403: "A collection the API key may not read.",
    404: "There is no index, or no such collection.",
    409: "The index holds another embedder's vectors (keyword mode still works).",
}


def _index(services: Services) -> IndexService:
    index = services.index
    if index is None:
        raise NotFound("there is no index: start with --docs DIR, or build one with 'ragproxy index'")
    return index


@post(
    "/v1/rag/search",
    status_code=200,
    operation_class=documented(RAG_SEARCH, upstream=False, errors=INDEX_ERRORS),
)
async def rag_search(request: AnyRequest, services: NamedDependency[Services]) -> dict[str, Any]:
    """Body: ``query`` (text), optional ``collections`` (names), ``k`` (default: the top_k
    setting), ``mode`` (hybrid, keyword or vector). No relevance cut: every chunk found, best
    first, with its score (fused 0..1 for hybrid, cosine similarity for vector, BM25 for keyword)."""
    index = _index(services)
    body = await read_json_object(request)
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise BadRequest("'query' must be a non-empty string", param="query")
    k = body.get("k", services.settings.top_k)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_TOP_K:
        raise BadRequest(f"'k' must be an integer from 1 to {MAX_TOP_K}", param="k")
    mode = body.get("mode", "hybrid")
    if mode not in MODES:
        raise BadRequest(f"'mode' must be one of {', '.join(MODES)}", param="mode")
    collections = body.get("collections")
    allowed = key_collections(request.scope)
    if collections is not None:
        if not isinstance(collections, list) or not all(isinstance(c, str) for c in collections):
            raise BadRequest("'collections' must be a list of names", param="collections")
        check_collections(collections, allowed, visible_collections(index, allowed), param="collections")
    collections = collections or (list(allowed) if allowed is not None else None)
    request_record(request.scope).update(rag_mode=mode, k=k)
    try:
        hits = await anyio.to_thread.run_sync(lambda: index.search(query, k, collections or None, mode))
    except ConfigError as exc:  # an index built with another embedder: keyword mode still works
        raise ProxyError(str(exc), status=409, code="embedder_mismatch") from None
    return {
        "object": "list",
        "query": query,
        "mode": mode,
        "data": [
            {
                "chunk_id": hit.chunk_id,
                "score": round(hit.score, 6),
                "file": hit.path,
                "collection": hit.collection,
                "start": hit.start,
                "end": hit.end,
                "heading": hit.heading,
                "page": hit.page,
                "text": hit.text,
            }
            for hit in hits
        ],
    }


@post("/v1/rag/preview", status_code=200, operation_class=documented(OPENAI_CHAT))
async def rag_preview(request: AnyRequest, services: NamedDependency[Services]) -> dict[str, Any]:
    """A chat body in; out, the request exactly as it would go upstream (after retrieval, context
    fitting and translation for the upstream's API), token estimates per message, and sources.
    The upstream may be asked for the model's window; the model is not called."""
    settings = services.settings
    call = prepare_chat(await read_checked(request, lambda raw: validate_chat(raw, settings)))
    await augment(call, caller(request, "openai"), services)
    body, rag = call.body, call.rag
    upstream = services.pool.preferred(body["model"])
    path, sent = upstream.chat_request(body)
    return {
        "object": "rag.preview",
        "model": body["model"],
        "upstream": {"api": upstream.api, "url": upstream.base, "path": path, "body": sent},
        "messages": body["messages"],
        "tokens": {
            "estimator": "priced by script (Qwen 2, Llama 3), +6 per message, x the model's scale",
            "scale": round(rag.scale, 3),
            "messages": [estimate_tokens(message_text(m)) for m in body["messages"]],
            "prompt_estimate": rag.prompt_estimate,
            "context": sum(estimate_tokens(p.text) for p in rag.passages),
            "window": rag.window,
            "reserved_for_answer": rag.reserve,
            "num_ctx": rag.num_ctx,
            "history_dropped": rag.history_dropped,
        },
        "rag": {
            "enabled": rag.control.enabled,
            "reason": rag.control.reason,
            "skipped": rag.skipped,
            "query": rag.query,
            "collections": list(rag.control.collections) if rag.control.collections else None,
            "top_k": rag.control.top_k,
            **rag.summary(),
        },
        "sources": rag.sources(),
    }


router = apis.router(apis.RAG, [rag_search, rag_preview])
