"""The search for a request: each query ranked, the chunks the relevance gate lets through
merged into numbered passages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proxy.index.service import IndexService, Ranking
from proxy.index.store import Hit
from proxy.logging import get_logger
from proxy.pipeline.conversation import Query
from proxy.pipeline.passages import Passage
from proxy.plugins import factory, rerankers
from proxy.settings import Settings
from proxy.types import Reranker

log = get_logger("ragproxy.retrieval")


@dataclass(frozen=True, slots=True)
class Retrieved:
    passages: list[Passage]
    gated: int  # chunks the searches found but the gate left out as unrelated to the question


def retrieve(
    service: IndexService,
    queries: str | Sequence[Query],
    *,
    top_k: int,
    collections: Sequence[str] | None,
    min_score: float | None = None,
    reranker: Reranker | None = None,
) -> Retrieved:
    """For each query, the chunks ``IndexService.rank`` orders and the relevance gate lets
    through; the rankings merged (a chunk's best weighted score), the best ``top_k``, adjacent
    chunks of a document merged. ``min_score``: a plain cosine cut instead of the gate."""
    if isinstance(queries, str):
        queries = [Query(queries, 1.0)]
    gate = relevance_gate(service, min_score)
    best: dict[int, tuple[float, Hit, float]] = {}  # chunk id -> (weighted score, hit, similarity)
    seen: set[int] = set()
    for query in queries:
        if not query.text.strip():
            continue
        ranking = service.rank(query.text, top_k, collections, reranker=reranker)
        seen.update(hit.chunk_id for hit in ranking.hits)
        for position, hit in enumerate(ranking.hits):
            if not gate.passes(hit, ranking):
                continue
            # a reranker's order is kept through its position; otherwise the fused score counts
            score = (1.0 / (1 + position) if reranker is not None else hit.score) * query.weight
            if hit.chunk_id not in best or score > best[hit.chunk_id][0]:
                similarity = ranking.similarity.get(hit.chunk_id, hit.score)
                best[hit.chunk_id] = (score, hit, similarity)
    ordered = sorted(best.values(), key=lambda entry: -entry[0])[:top_k]
    chosen = [hit for _, hit, _ in ordered]
    scores = {hit.chunk_id: similarity for _, hit, similarity in ordered}
    return Retrieved(_merge(chosen, scores), len(seen) - len(best))


@dataclass(frozen=True, slots=True)
class Gate:
    """Whether a chunk is related to the question, so unrelated chats get no context.

    Embedders score all text of one language alike (e5: any Chinese text 0.84-0.88 against any
    Chinese prompt, English far lower), so one cosine threshold cannot serve both languages nor
    every collection. What tells a related chunk is how far it stands above the query's own
    background, its similarity to every chunk of the collection in the query's script (``z``,
    in standard deviations). Keyword evidence adds to it: the share of the query's informative
    terms the chunk matches (``strength``, BM25 over the query's total IDF, language-neutral)
    is worth up to ``words_weight`` deviations, so a chunk passes far enough above the
    background on meaning alone, or less far with the words confirming it, but never closer
    than ``z_floor``: evidence adds up rather than each kind needing its own bar.
    A query of one or two terms ("thanks!", "hi", "what model are you") has no such evidence to
    give and an embedding that lands anywhere: it needs to stand out further, on meaning alone.
    Where the background says nothing (fewer than 50 chunks in the query's script, or a chunk in
    another script) the embedder's own cosine thresholds per script apply; an embedder without
    them is not gated there.

    However it is judged, a chunk in the question's script must also stand nearer to the question
    than the nearest of the shipped everyday prompts does (``Ranking.everyday``, once they are
    embedded): a question that reads like everyday chat (a translation, a sum, advice, trivia)
    gets context only from a chunk closer to it than that chat. A chunk in the other script is
    not held to it: cross-language similarities run lower than any same-script neighbour's.
    Calibrated with bench/relevance_eval.py and bench/gate_evidence.py (BENCHMARKS.md)."""

    z_alone: float = 5.75  # meaning alone
    words_weight: float = 5.0  # what every informative term matched adds, in deviations
    z_floor: float = 2.0  # however strong the words
    strength: float = 0.45  # a chunk without a vector yet: the words alone
    few_terms: int = 3  # a query with fewer informative terms ...
    z_few_terms: float = 6.0  # ... needs this, on meaning alone
    everyday_margin: float = 0.0  # how much nearer than the nearest everyday prompt, in cosine
    fallback: tuple[float, float] | None = None  # cosine for (Latin, CJK) queries
    cosine: float | None = None  # a plain cosine cut instead (--min-score)
    # a collection's own cosine bar for questions in a script it holds no text in, by
    # (collection, CJK question): measured on the collection (proxy/index/calibration.py)
    bars: Mapping[tuple[str, bool], float] = field(default_factory=dict)

    def passes(self, hit: Hit, ranking: Ranking) -> bool:
        similarity = ranking.similarity.get(hit.chunk_id)
        strength = ranking.strength.get(hit.chunk_id, 0.0)
        if similarity is None:  # no vector yet (or a keyword-only index): the words decide
            return self.cosine is not None or strength >= self.strength
        if self.cosine is not None:
            return similarity >= self.cosine
        background = ranking.background
        cjk = ranking.cjk
        same_script = hit.cjk == cjk
        everyday = ranking.everyday
        if same_script and everyday is not None and similarity < everyday + self.everyday_margin:
            return False  # everyday chat stands nearer to the question than this chunk
        if background is not None and background.same_script:
            if same_script:
                z = background.z(similarity)
                if ranking.terms < self.few_terms:
                    return z >= self.z_few_terms
                return z >= self.z_floor and z + self.words_weight * strength >= self.z_alone
        elif (bar := self.bars.get((hit.collection, cjk))) is not None:
            return similarity >= bar
        return self.fallback is None or similarity >= self.fallback[cjk]


def relevance_gate(service: IndexService, min_score: float | None) -> Gate:
    """The gate for this index's embedder; ``min_score``: a plain cosine cut instead."""
    if min_score is not None:
        return Gate(cosine=min_score)
    if not service.has_vectors():
        return Gate()
    latin, cjk = getattr(service.embedder, "min_score_by_script", (None, None))
    fallback = (latin, cjk) if latin is not None and cjk is not None else None
    return Gate(fallback=fallback, bars=service.calibration.bars())


def make_reranker(settings: Settings) -> Reranker | None:
    if not settings.reranker:
        return None
    make = factory("reranker", settings.reranker, rerankers())
    reranker: Reranker = make(url=settings.rerank_url or settings.upstream_base, model=settings.rerank_model)
    return reranker


def _merge(hits: Sequence[Hit], scores: Mapping[int, float]) -> list[Passage]:
    """Consecutive chunks of one section of one document become one passage, placed where its
    best chunk ranked."""
    rank = {hit.chunk_id: i for i, hit in enumerate(hits)}
    groups: list[list[Hit]] = []
    for hit in sorted(hits, key=lambda h: (h.document_id, h.ordinal)):
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and last.document_id == hit.document_id
            and last.ordinal + 1 == hit.ordinal
            and last.heading == hit.heading
            and last.page == hit.page
        ):
            groups[-1].append(hit)
        else:
            groups.append([hit])
    groups.sort(key=lambda group: min(rank[h.chunk_id] for h in group))
    passages = []
    for number, group in enumerate(groups, start=1):
        text = group[0].text
        for previous, hit in zip(group, group[1:], strict=False):
            overlap = previous.end - hit.start
            text = _join(text, hit.text, overlap) if overlap > 0 else f"{text}\n\n{hit.text}"
        first = group[0]
        passages.append(
            Passage(
                number=number,
                collection=first.collection,
                path=first.path,
                start=first.start,
                end=group[-1].end,
                heading=first.heading,
                page=first.page,
                score=max(scores[h.chunk_id] for h in group),
                text=text,
                chunk_ids=tuple(h.chunk_id for h in group),
            )
        )
    return passages


def _join(left: str, right: str, overlap: int) -> str:
    """Two consecutive chunks, the text they share written once."""
    for size in range(min(overlap, len(left), len(right)), 0, -1):
        if left.endswith(right[:size]):
            return left + right[size:]
    return f"{left}\n{right}"
