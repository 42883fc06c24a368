"""What every store backend shares: the rows a search returns, a document ready to be written,
and the hashes and vector packing both engines store alike."""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.index import textsearch
from proxy.types import Chunk


def content_hasher() -> hashlib.blake2b:
    """What ``content_hash`` hashes with, for data fed a part at a time."""
    return hashlib.blake2b(digest_size=16)


def content_hash(data: bytes | str) -> str:
    hasher = content_hasher()
    hasher.update(data.encode() if isinstance(data, str) else data)
    return hasher.hexdigest()


def pack(vector: Sequence[float]) -> bytes:
    """Float32 bytes of the vector scaled to unit length: then L2 distance ranks exactly like
    cosine similarity (cos = 1 - d²/2), and sqlite-vec computes L2 faster than cosine."""
    values = array("f", vector)
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array("f", (v / norm for v in values)).tobytes()


def embedding_text(text: str, heading: str | None) -> str:
    """What is embedded and keyword-indexed: the heading path gives a chunk its context."""
    return f"{heading}\n\n{text}" if heading else text


@dataclass(frozen=True, slots=True)
class DocumentState:
    id: int
    content_hash: str
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk found by a search, with where it comes from. ``score``: higher is better."""

    chunk_id: int
    score: float
    text: str
    collection: str
    path: str
    start: int
    end: int
    heading: str | None
    page: int | None
    document_id: int = 0
    ordinal: int = 0
    content_hash: str = ""
    cjk: bool = False  # its chunk is written in a CJK script, as the store recorded it

    def scored(self, score: float) -> Hit:
        """The same hit with another score (``dataclasses.replace`` took 10x as long: fusion
        re-scores ~100 hits a question)."""
        return Hit(
            self.chunk_id,
            score,
            self.text,
            self.collection,
            self.path,
            self.start,
            self.end,
            self.heading,
            self.page,
            self.document_id,
            self.ordinal,
            self.content_hash,
            self.cjk,
        )


@dataclass(frozen=True, slots=True)
class NewDocument:
    """A loaded and chunked file, ready to be written (made by ``new_document``)."""

    path: str
    digest: str
    size: int
    mtime: float
    loader: str
    chunks: Sequence[Chunk]
    hashes: Sequence[str]  # each chunk's content hash (of its ``embedding_text``)
    keyword_texts: Sequence[str]  # what FTS5 indexes for each chunk


def new_document(
    path: str, digest: str, size: int, mtime: float, loader: str, chunks: Sequence[Chunk]
) -> NewDocument:
    """The document with its chunks' hashes and keyword texts, computed here, outside the write
    lock, so that a scan prepares the next files while the last ones are written."""
    bodies = [embedding_text(chunk.text, chunk.heading) for chunk in chunks]
    return NewDocument(
        path,
        digest,
        size,
        mtime,
        loader,
        chunks,
        [content_hash(b) for b in bodies],
        textsearch.index_texts(bodies),
    )


@dataclass(frozen=True, slots=True)
class PendingChunk:
    chunk_id: int
    collection_id: int
    content_hash: str
    text: str  # as embedded: the chunk's heading and text
    cjk: bool  # the chunk is written in a CJK script, as the store recorded it


def moved_message(name: str, root: str, new_root: str) -> str:
    return (
        f"the collection {name!r} is the folder {root}, not {new_root}: give this folder another "
        f"name, or move the collection to it with `ragproxy index {new_root} --collection {name} --move`"
    )


class ThreadReader:
    """A thread's read connection, held only by that thread's locals (and weakly by the store):
    when the thread ends, the holder goes and closes it."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def __del__(self) -> None:
        self.conn.close()


def hit_from_row(row: Mapping[str, Any], score: float) -> Hit:
    """A hit from a row of the chunk, document and collection columns both stores select."""
    return Hit(
        chunk_id=row["id"],
        score=float(score),
        text=row["text"],
        collection=row["name"],
        path=row["path"],
        start=row["start"],
        end=row["end"],
        heading=row["heading"],
        page=row["page"],
        document_id=row["document_id"],
        ordinal=row["ordinal"],
        content_hash=row["content_hash"],
        cjk=bool(row["cjk"]),
    )


BM25_K1, BM25_B = 1.2, 0.75  # FTS5's


def bm25_scores(
    counts: Mapping[str, Mapping[int, int]], lengths: Mapping[int, int], total: int, tokens: int
) -> dict[int, float]:
    """Each chunk's BM25 as FTS5's ``bm25()`` computes it, in the same order of operations:
    ``counts``, each term's count in each chunk of those searched that holds it, in the query's
    order; ``lengths``, those chunks' tokens; ``total`` and ``tokens``, the chunks searched and
    their tokens (the IDF and the mean length)."""
    scores: dict[int, float] = {}
    mean = tokens / total if total and tokens else 1.0
    for found in counts.values():
        idf = bm25_idf(total, len(found))
        for chunk, tf in found.items():
            norm = tf + BM25_K1 * (1 - BM25_B + BM25_B * lengths[chunk] / mean)
            scores[chunk] = scores.get(chunk, 0.0) + idf * ((tf * (BM25_K1 + 1.0)) / norm)
    return scores


def bm25_idf(total: int, hits: int) -> float:
    """A term's inverse document frequency as FTS5's BM25 computes it (never below 1e-6)."""
    return max(math.log((total - hits + 0.5) / (hits + 0.5)), 1e-6)


def keyword_weights(
    terms: Mapping[str, int | None], total: int, phrase_hits: Callable[[str], int]
) -> dict[str, float]:
    """Each search term's IDF over ``total`` chunks: from its document frequency, or, for a phrase
    (a Chinese pair, whose frequency is not kept), from ``phrase_hits(term)``, a count."""
    weights = {}
    for term, hits in terms.items():
        if hits is None:
            hits = phrase_hits(term)
        if hits == 0 and " " in term:
            # a pair of Chinese characters no chunk holds is mostly one across two words ("和邮"
            # of 用户名和邮箱): weighed at the rarest, it made the chunk holding every word the
            # index has look weak (the Debian Reference's Chinese questions, BENCHMARKS.md)
            continue
        weights[term] = bm25_idf(total, min(hits, total))  # a token's frequency may be seconds old
    return weights
