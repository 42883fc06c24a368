"""The index as the rest of ragproxy uses it: store, indexer and embedding worker built from the
settings, and the search functions (keyword, vector, and both fused)."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from proxy.errors import ConfigError
from proxy.index import textsearch
from proxy.index.calibration import Calibration
from proxy.index.chunker import excerpt, join_chunks
from proxy.index.embedding import EmbeddingWorker
from proxy.index.extract import Limits
from proxy.index.indexer import Collection, Indexer, check_clash
from proxy.index.names import path_text
from proxy.index.store import Hit, embedding_text, moved_message, open_store
from proxy.index.vectors import Background
from proxy.logging import get_logger
from proxy.plugins import embedders, factory
from proxy.settings import Settings
from proxy.text import asked_in_cjk
from proxy.types import Embedder, ReadOptions, Reranker

log = get_logger("ragproxy.index")

SearchMode = Literal["hybrid", "keyword", "vector"]


def make_embedder(settings: Settings) -> Embedder:
    make = factory("embedder", settings.embedder, embedders())
    embedder: Embedder = make(
        upstream=settings.upstream,
        model=settings.embed_model,
        threads=settings.embed_threads or None,
        engine=settings.e5_engine,
    )
    return embedder


class IndexService:
    def __init__(
        self, settings: Settings, embedder: Embedder | None = None, *, readonly: bool = False
    ) -> None:
        """``readonly``: search an index that exists as it is (``open_index``)."""
        self.settings = settings
        self.store = open_store(settings.database, readonly=readonly)
        self._embedder = embedder
        self.indexer = Indexer(
            self.store,
            max_file_bytes=settings.max_file_size,
            max_file_chunks=settings.max_file_chunks,
            limits=Limits(settings.reader_memory << 20, settings.reader_timeout, settings.max_file_text),
            options=ReadOptions(ocr=settings.ocr != "off", ocr_pages=settings.ocr_pages),
            chunk_tokens=settings.chunk_tokens,
            chunk_overlap=settings.chunk_overlap,
            on_change=self._changed,
        )
        self._worker: EmbeddingWorker | None = None
        self._mismatch_logged = False
        self._recent_queries: dict[str, list[float]] = {}
        self._recent_lock = threading.Lock()
        # keyword searches run here beside the vector search of the same question
        self._keyword_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ragproxy-keyword")
        # each collection's own cosine bar for questions in a script it holds no text in
        self.calibration = Calibration()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.settings)
        return self._embedder

    @property
    def worker(self) -> EmbeddingWorker:
        """Created on first use, binding the embedder to the index (re-embedding or refusing if
        the index holds another embedder's vectors)."""
        if self._worker is None:
            embedder = self.embedder
            if self.settings.chunk_tokens > embedder.max_tokens:
                raise ConfigError(
                    f"chunk_tokens {self.settings.chunk_tokens} is more than embedder "
                    f"{embedder.name!r} reads ({embedder.max_tokens} tokens)"
                )
            if self.store.bind_embedder(
                embedder.name, embedder.dim, on_change=self.settings.on_embedder_change
            ):
                log.warning("index.reembedding", embedder=embedder.name)
            self._worker = EmbeddingWorker(self.store, embedder)
        return self._worker

    def embedded_chunks(self) -> int:
        """Chunks the embedding worker gave vectors since start (0 before it exists)."""
        return self._worker.embedded if self._worker is not None else 0

    def _changed(self) -> None:
        if self._worker is not None:
            self._worker.notify()

    def add_folders(self, folders: Sequence[tuple[str, Path]], *, move: bool = False) -> list[Collection]:
        """Each (name, folder) as a collection, named as ``plan_folders`` says."""
        planned = plan_folders(self.store.collection_roots(), folders, move=move)
        return [self.indexer.add_collection(name, root, move=move) for name, root in planned]

    def close(self) -> None:
        self.calibration.stop()
        self._keyword_pool.shutdown(wait=True)
        if self._worker is not None:
            self._worker.stop()
        close_embedder = getattr(self._embedder, "close", None)
        if close_embedder is not None:
            close_embedder()
        self.indexer.close()
        self.store.close()

    def serves_model(self, model: str) -> bool:
        """True if ``model`` names this index's embedder: its model name (as ``ragproxy status``
        shows it) or its plugin name (``e5``). Nothing is loaded to decide."""
        return model == self.settings.embedder or model == self.store.embedder()[0]

    def document_text(self, collection: str, path: str) -> str | None:
        """A document's text, rebuilt from its chunks; None if the index has no such document."""
        chunks = self.store.document_chunks(collection, path)
        return None if chunks is None else join_chunks(chunks)

    # -- search -----------------------------------------------------------------------------------
    def has_vectors(self) -> bool:
        """True if the index holds vectors this service's embedder can search. An index built with
        another embedder is searched by keyword only (and logged), never re-bound by a search."""
        indexed_with, _ = self.store.embedder()
        if indexed_with is None:
            return False
        if indexed_with != self.embedder.name:
            if not self._mismatch_logged:
                log.warning("index.embedder_mismatch", index=indexed_with, configured=self.embedder.name)
                self._mismatch_logged = True
            return False
        return True

    def search(
        self, query: str, k: int = 10, collections: Sequence[str] | None = None, mode: SearchMode = "hybrid"
    ) -> list[Hit]:
        """The ``k`` best chunks (no relevance cut): what ``rank`` orders, for the search API and
        command."""
        return self.rank(query, k, collections, mode, strict=True).hits[:k]

    def rank(
        self,
        query: str,
        k: int,
        collections: Sequence[str] | None = None,
        mode: SearchMode = "hybrid",
        *,
        reranker: Reranker | None = None,
        strict: bool = False,
        embedded: list[float] | None = None,
    ) -> Ranking:
        """Every search goes through here: chats, the search API and command, the benchmarks.

        Keyword (FTS5 BM25) and vector (exact cosine) candidates, pools of at least ``POOL``,
        fused by strength (``fuse``), one chunk per distinct text, then reordered by the reranker if
        there is one. ``strict``: an index built with another embedder is an error (else it is
        searched by keyword only, and logged). ``embedded``: the query's embedding, when the
        caller has it (then the cache of recent questions is neither read nor filled)."""
        query = excerpt(query, QUERY_TOKENS, ends=True)  # a pasted book searches like a question
        query = self.store.spelled(query)  # a misspelt rare word is the one the words lean on
        pool = max(POOL, 2 * k)
        cjk = asked_in_cjk(query)

        def search_keyword() -> tuple[list[Hit], float]:
            terms = self.store.keyword_terms(query)  # chosen once for the search and its weights
            hits = self.store.search_keyword(query, pool, collections, terms)
            return hits, sum(self.store.keyword_idf(query, terms, collections).values()) if hits else 0.0

        by_vector = mode != "keyword" and self._searchable_by_vector(strict)
        keyword: list[Hit] = []
        idf = 0.0
        pending: Future[tuple[list[Hit], float]] | None = None
        if mode != "vector":
            # beside the query's embedding and the vector scan, which wait in numpy and the
            # embedder with the GIL released; alone, in this thread
            if by_vector:
                pending = self._keyword_pool.submit(search_keyword)
            else:
                keyword, idf = search_keyword()
        vector: list[Hit] = []
        background: Background | None = None
        similarity: dict[int, float] = {}
        query_vector: list[float] | None = None
        try:
            if by_vector:
                query_vector = self._query_vector(query) if embedded is None else embedded
                vector, background = self.store.scan_vectors(query_vector, pool, collections, cjk)
        finally:
            if pending is not None:
                keyword, idf = pending.result()
        if query_vector is not None:
            similarity = {hit.chunk_id: hit.score for hit in vector}
            missing = [hit.chunk_id for hit in keyword if hit.chunk_id not in similarity]
            similarity.update(self.store.similarities(query_vector, missing))
        # BM25 over the sum of the query terms' IDF: ~1 for a chunk holding every term once,
        # a small fraction for one that shares a common word or two
        strength = {hit.chunk_id: min(1.0, hit.score / idf) for hit in keyword} if idf else {}
        if background is not None and background.other is not None:
            if mode == "hybrid":
                # both scripts ranked (vectors.by_script): each chunk fused by how far it stands
                # above its own script's background; with one background, the cosine's min-max
                vector = [hit.scored(background.of(hit.cjk == cjk).z(hit.score)) for hit in vector]
            else:
                # vector only: the nearest by cosine, as the mode says (by z alone, the top of
                # the other script's noise outranks a question's own paragraph: BENCHMARKS.md)
                vector.sort(key=lambda hit: -hit.score)
        ordered = (
            keyword if mode == "keyword" else vector if mode == "vector" else fuse(keyword, vector, strength)
        )
        seen: set[str] = set()
        hits = []
        for hit in ordered:
            if hit.content_hash not in seen:
                seen.add(hit.content_hash)
                hits.append(hit)
        if reranker is not None and len(hits) > 1:
            hits = _reranked(reranker, query, hits)
        terms = len(textsearch.query_terms(query))
        everyday = None if query_vector is None else self.calibration.nearest_everyday(query_vector)
        return Ranking(hits, similarity, strength, background, terms, cjk, everyday)

    def question_vector(self, query: str) -> list[float]:
        """A question's embedding as ``rank`` makes it (its two ends if it is long), uncached."""
        return self.embedder.embed_query(excerpt(query, QUERY_TOKENS, ends=True))

    def _query_vector(self, query: str) -> list[float]:
        """The query's embedding, from a small cache of recent ones: a follow-up searches the
        previous question again, which the previous request embedded."""
        with self._recent_lock:
            vector = self._recent_queries.pop(query, None)
        if vector is None:
            vector = self.embedder.embed_query(query)
        with self._recent_lock:
            self._recent_queries[query] = vector  # most recent last
            while len(self._recent_queries) > RECENT_QUERIES:
                self._recent_queries.pop(next(iter(self._recent_queries)))
        return vector

    def _searchable_by_vector(self, strict: bool) -> bool:
        if strict:
            indexed_with, _ = self.store.embedder()
            if indexed_with is not None and indexed_with != self.embedder.name:
                raise ConfigError(
                    f"the index holds vectors of {indexed_with!r}, not of "
                    f"{self.embedder.name!r}: search with the embedder it was built with"
                )
        return self.has_vectors()


@dataclass(frozen=True, slots=True)
class Ranking:
    """What a search found, best first, with the evidence the relevance gate reads."""

    hits: list[Hit]
    similarity: dict[int, float]  # cosine of the query to each hit that has a vector
    strength: dict[int, float]  # keyword strength of each keyword hit, 0..1
    background: Background | None  # the query's similarity to all the chunks searched
    terms: int = 0  # the query's informative search terms ("thanks!" has one, "早安" one)
    cjk: bool = False  # the query is mostly in a CJK script
    everyday: float | None = None  # cosine of the nearest shipped everyday prompt (calibration.py)


def _reranked(reranker: Reranker, query: str, hits: list[Hit]) -> list[Hit]:
    """The hits in the reranker's order; if it fails, in the fused order (logged): a reranking
    server that is down must not fail the chat."""
    try:
        scores = reranker.rerank(query, [embedding_text(hit.text, hit.heading) for hit in hits])
    except Exception as exc:
        log.warning("retrieval.rerank_failed", reranker=reranker.name, error=str(exc)[:200])
        return hits
    order = sorted(range(len(hits)), key=lambda i: -scores[i])
    return [hits[i] for i in order]


RECENT_QUERIES = 256  # query embeddings kept (1.5 KB each at 384 dimensions)
QUERY_TOKENS = 512  # what an embedder reads; longer questions are searched by their two ends
POOL = 50  # candidates from each list: fusion and the gate need a view beyond the top few
KEYWORD_WEIGHT = 0.5  # chosen on SciFact's training queries (BENCHMARKS.md)


STRONG_KEYWORDS = 0.3  # a keyword list whose best hit has this strength counts in full


def fuse(
    keyword: Sequence[Hit],
    vector: Sequence[Hit],
    strength: Mapping[int, float] | None = None,
    keyword_weight: float = KEYWORD_WEIGHT,
) -> list[Hit]:
    """Hybrid ranking: each list's scores scaled to 0..1 (min-max over the list), then summed
    with weights; a hit missing from one list gets 0 there. With ``strength`` (each keyword hit's
    BM25 over the query's total IDF), the keyword list counts only as much as its best hit is
    strong: in full from ``STRONG_KEYWORDS``, less below, so a list of weak hits (a stray number,
    one shared word: a Chinese question over English text) cannot outvote a strong vector list.
    Measured (bench/relevance_eval.py): SciFact nDCG@10 as min-max alone, cross-language
    recall@1 above both min-max and vector alone."""
    weight = keyword_weight
    if strength is not None:
        weight *= min(1.0, max(strength.values(), default=0.0) / STRONG_KEYWORDS)
    scores: dict[int, float] = {}
    hits: dict[int, Hit] = {}
    for part, ranking in ((weight, keyword), (1.0 - keyword_weight, vector)):
        for hit, scaled in zip(ranking, _min_max(ranking), strict=True):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + part * scaled
            hits.setdefault(hit.chunk_id, hit)
    order = sorted(scores, key=lambda chunk_id: scores[chunk_id], reverse=True)
    return [hits[i].scored(round(scores[i], 6)) for i in order]


def _min_max(ranking: Sequence[Hit]) -> list[float]:
    """Each hit's score scaled to 0..1 over the list (all 1.0 if they are equal)."""
    if not ranking:
        return []
    high, low = max(h.score for h in ranking), min(h.score for h in ranking)
    return [(h.score - low) / (high - low) if high > low else 1.0 for h in ranking]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Hit]], k: int = 60, weights: Sequence[float] | None = None
) -> list[Hit]:
    """Each hit scores the sum of weight / (k + rank) over the rankings it appears in."""
    scores: dict[int, float] = {}
    hits: dict[int, Hit] = {}
    for i, ranking in enumerate(rankings):
        weight = weights[i] if weights is not None else 1.0
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (k + rank)
            hits.setdefault(hit.chunk_id, hit)
    order = sorted(scores, key=lambda chunk_id: scores[chunk_id], reverse=True)
    return [hits[i].scored(round(scores[i], 6)) for i in order]


def open_index(settings: Settings) -> IndexService:
    """The index as it is, read-only, for ``search``, ``status`` and ``mcp``: a missing file is
    an error that says how to make one, never an empty index created in its place."""
    path = settings.db_path
    if settings.db_url is None and not path.is_file():
        raise ConfigError(
            f"no index at {path}: build one with 'ragproxy index DIR' or 'ragproxy serve --docs DIR', "
            "or point --db at an existing one"
        )
    return IndexService(settings, readonly=True)


def check_folders(settings: Settings) -> None:
    """``plan_folders`` against the index as it is: a clash is told before the server starts."""
    roots: dict[str, str] = {}
    if settings.index_exists():
        store = open_store(settings.database)
        try:
            roots = store.collection_roots()
        finally:
            store.close()
    plan_folders(roots, settings.doc_folders())


def plan_folders(
    roots: Mapping[str, str], folders: Sequence[tuple[str, Path]], *, move: bool = False
) -> list[tuple[str, Path]]:
    """(collection name, resolved folder) for each (name, folder), given the folders the index
    already holds (``roots``, by name). A folder given without a name keeps the one the index
    knows it by; a new one is named after the folder, with its parents' names in front if
    another folder holds that name ("notes", then "work-notes"). A name the index holds for
    another folder is refused unless ``move``: nothing is replaced because two folders share a
    name. Checked before serving starts, and again as each collection is added."""
    known = {root: name for name, root in roots.items()}
    taken = set(roots) | {name for name, _ in folders if name}
    planned: list[tuple[str, Path]] = []
    for name, folder in folders:
        root = Path(os.path.realpath(folder))
        stored = path_text(str(root))  # as the index holds folders
        if not name:
            name = known.get(stored) or _free_name(root, taken)
            taken.add(name)
        elif roots.get(name, stored) != stored and not move:
            raise ConfigError(moved_message(name, roots[name], stored))
        check_clash(name, root, planned)
        planned.append((name, root))
    return planned


def _free_name(folder: Path, taken: set[str]) -> str:
    parts = [path_text(part) for part in folder.parts if part not in ("/", "")] or ["docs"]
    for depth in range(1, len(parts) + 1):
        name = "-".join(parts[-depth:])
        if name not in taken:
            return name
    number = 2
    while f"{parts[-1]}-{number}" in taken:
        number += 1
    return f"{parts[-1]}-{number}"
