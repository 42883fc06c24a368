"""The MCP server over the index: the tools ``search``, ``fetch`` and ``list_collections``, built
with the MCP SDK (imported only when MCP is used: ~0.8 s and ~30 MB). ``ragproxy mcp`` runs it
over stdio; ``proxy.api.mcp`` serves it at ``/mcp``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from proxy import version
from proxy.api.security import key_collections
from proxy.errors import ConfigError, ProxyError
from proxy.index.service import IndexService
from proxy.index.store import Hit
from proxy.logging import get_logger
from proxy.pipeline.chat import check_collections, visible_collections
from proxy.pipeline.controls import MAX_TOP_K
from proxy.pipeline.services import Services
from proxy.settings import Settings

log = get_logger("ragproxy.mcp")

FETCH_CHARS = 50_000  # most text one fetch returns; a longer document is read on with ``offset``
INSTRUCTIONS = (
    "Search the user's own documents (their indexed folders, one collection per folder). "
    "Use search to find passages, fetch to read a passage or a whole document, list_collections "
    "to see what is indexed."
)
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)

ToolContext = Context[Any, Any]
# Where a call reads from: the index (None: there is none) and the collections the caller may
# read (None: all of them).
Access = Callable[[ToolContext], tuple[IndexService | None, tuple[str, ...] | None]]


class Passage(BaseModel):
    ref: str = Field(description="collection:path of the document, as fetch takes it.")
    chunk_id: int = Field(description="The chunk's id, as fetch takes it.")
    score: float = Field(description="Fused 0..1 for hybrid, cosine for vector, BM25 for keyword.")
    collection: str
    path: str
    heading: str | None = Field(description="The heading path of the section, if any.")
    page: int | None = Field(description="The page (PDF), if any.")
    start: int = Field(description="Where the chunk starts in the document's text (characters).")
    end: int
    text: str


class SearchResult(BaseModel):
    query: str
    mode: str
    passages: list[Passage] = Field(description="Best first; no relevance cut.")


class Fetched(BaseModel):
    ref: str = Field(description="collection:path of the document.")
    chunk_id: int | None = Field(description="The chunk fetched; None for a whole document.")
    heading: str | None
    page: int | None
    offset: int = Field(description="Where ``text`` starts (characters).")
    total_chars: int = Field(description="The length of the whole chunk or document text.")
    next_offset: int | None = Field(description="Fetch again with this offset for more; None at the end.")
    text: str


class CollectionInfo(BaseModel):
    name: str
    folder: str
    documents: int
    chunks: int
    pending_vectors: int = Field(description="Chunks not embedded yet (found by keyword only).")
    skipped_files: int = Field(description="Files left out (binary, oversized, unreadable...).")
    last_update: str | None = Field(description="When a document last changed, ISO 8601 UTC.")


class Collections(BaseModel):
    embedder: str | None
    collections: list[CollectionInfo]


def build_mcp(access: Access, *, top_k: int = 5) -> MCPServer:
    """The MCP server with its tools; ``access`` says, per call, what the caller may read."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server = MCPServer("ragproxy", instructions=INSTRUCTIONS, version=version(), log_level="WARNING")
    # MCPServer configures the root logger (a handler on stderr); ragproxy's logging is its own
    root.handlers[:], root.level = handlers, level

    @server.tool(annotations=READ_ONLY, structured_output=True)
    def search(
        ctx: ToolContext,
        query: Annotated[str, Field(min_length=1, description="What to look for, in any words.")],
        collections: Annotated[
            list[str] | None, Field(description="Only these collections (default: all you may read).")
        ] = None,
        k: Annotated[int, Field(ge=1, le=MAX_TOP_K, description="How many passages.")] = top_k,
        mode: Annotated[
            Literal["hybrid", "keyword", "vector"],
            Field(description="hybrid: keyword and meaning; keyword: exact words; vector: meaning."),
        ] = "hybrid",
    ) -> SearchResult:
        """Search the user's indexed documents (keyword and meaning, English and Chinese). Returns
        the best passages, each with its document (collection:path), heading, page, score, chunk id
        and text. Use fetch with a chunk id or collection:path to read more."""
        index, allowed = _open(access, ctx)
        if not query.strip():
            raise ToolError("query is empty")
        try:
            if collections is not None:
                visible = visible_collections(index, allowed)
                check_collections(collections, allowed, visible, param="collections")
            names = collections or (list(allowed) if allowed is not None else None)
            hits = index.search(query, k, names, mode)
        except (ProxyError, ConfigError) as exc:
            raise ToolError(_message(exc)) from None
        log.info("mcp.search", mode=mode, k=k, found=len(hits))
        return SearchResult(query=query, mode=mode, passages=[_passage(hit) for hit in hits])

    @server.tool(
        annotations=READ_ONLY,
        structured_output=True,
        description="Read a chunk by its id (from search), or a whole document by collection:path: "
        f"its text rebuilt from the index, at most {FETCH_CHARS:,} characters per call (next_offset "
        "continues).",
    )
    def fetch(
        ctx: ToolContext,
        id_or_path: Annotated[
            str | int,
            Field(description="A chunk id (from search), or collection:path for the whole document."),
        ],
        offset: Annotated[int, Field(ge=0, description="Start here (characters); for long documents.")] = 0,
    ) -> Fetched:
        index, allowed = _open(access, ctx)
        target = str(id_or_path).strip()
        if target.isdigit():
            hit = index.store.chunk(int(target), allowed)
            if hit is None:
                raise ToolError(f"no chunk {target}")
            ref = f"{hit.collection}:{hit.path}"
            return _page(ref, hit.text, offset, hit.chunk_id, hit.heading, hit.page)
        collection, path = _split_ref(target, visible_collections(index, allowed), allowed)
        text = index.document_text(collection, path)
        if text is None:
            raise ToolError(f"no document {path!r} in collection {collection!r}")
        return _page(f"{collection}:{path}", text, offset)

    @server.tool(annotations=READ_ONLY, structured_output=True)
    def list_collections(ctx: ToolContext) -> Collections:
        """The indexed collections (one per folder) you may read: folder, documents, chunks, chunks
        still waiting for vectors, skipped files and the last update."""
        index, allowed = _open(access, ctx)
        status = index.store.status()
        return Collections(
            embedder=status["embedder"],
            collections=[
                CollectionInfo(
                    name=c["name"],
                    folder=c["root"],
                    documents=c["documents"],
                    chunks=c["chunks"],
                    pending_vectors=c["pending_vectors"],
                    skipped_files=len(c["skipped"]),
                    last_update=(
                        datetime.fromtimestamp(c["last_update"], UTC).isoformat(timespec="seconds")
                        if c["last_update"]
                        else None
                    ),
                )
                for c in status["collections"]
                if allowed is None or c["name"] in allowed
            ],
        )

    return server


def _open(access: Access, ctx: ToolContext) -> tuple[IndexService, tuple[str, ...] | None]:
    index, allowed = access(ctx)
    if index is None:
        raise ToolError("there is no index: serve with --docs DIR, or build one with 'ragproxy index'")
    return index, allowed


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, ProxyError) else str(exc)


def _passage(hit: Hit) -> Passage:
    return Passage(
        ref=f"{hit.collection}:{hit.path}",
        chunk_id=hit.chunk_id,
        score=round(hit.score, 6),
        collection=hit.collection,
        path=hit.path,
        heading=hit.heading,
        page=hit.page,
        start=hit.start,
        end=hit.end,
        text=hit.text,
    )


def _split_ref(ref: str, visible: list[str], allowed: tuple[str, ...] | None) -> tuple[str, str]:
    """``collection:path`` -> (collection, path); the collection must be one the caller may read.
    Matched against the collection names, so a path may hold colons."""
    for name in sorted(visible, key=len, reverse=True):
        if ref.startswith(name + ":"):
            return name, ref[len(name) + 1 :].lstrip("/")
    name, sep, path = ref.partition(":")
    if not sep:
        raise ToolError("give a chunk id, or collection:path")
    try:  # a collection the caller may not read, or one the index lacks
        check_collections([name], allowed, visible, param="id_or_path")
    except ProxyError as exc:
        raise ToolError(exc.message) from None
    return name, path.lstrip("/")


def _page(
    ref: str,
    text: str,
    offset: int,
    chunk_id: int | None = None,
    heading: str | None = None,
    page: int | None = None,
) -> Fetched:
    end = offset + FETCH_CHARS
    return Fetched(
        ref=ref,
        chunk_id=chunk_id,
        heading=heading,
        page=page,
        offset=offset,
        total_chars=len(text),
        next_offset=end if end < len(text) else None,
        text=text[offset:end],
    )


# -- streamable HTTP on the server ------------------------------------------------------------------
def http_sessions(settings: Settings, services: Callable[[], Services]) -> StreamableHTTPSessionManager:
    """The session manager of ``/mcp``: stateless, one JSON body per POST. The SDK's own Host
    check is off: SecurityMiddleware has checked Host already, against the configured allow-list."""

    def access(ctx: ToolContext) -> tuple[IndexService | None, tuple[str, ...] | None]:
        """The app's index, and the collections of the request's API key (set by
        SecurityMiddleware before any route). No request, no access."""
        scope = getattr(ctx.request_context.request, "scope", None)
        if scope is None:
            raise ToolError("no HTTP request")
        return services().index, key_collections(scope)

    server = build_mcp(access, top_k=settings.top_k)
    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        max_request_body_size=settings.max_body_size,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return server.session_manager
