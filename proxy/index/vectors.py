"""All vectors of an index as one float32 matrix in memory: an exact scan is a single BLAS
matrix-vector product, ~8 ms for 100k x 384 on this kind of machine against ~85 ms for
sqlite-vec's scan of the same rows (BENCHMARKS.md). Costs 4 x dim bytes of RAM per chunk
(154 MB per 100k chunks at 384 dimensions). sqlite-vec's table stays the storage of record; the
matrix is loaded from it and kept in step by the store."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Background:
    """The query's cosine similarity to every chunk searched: its mean and spread. Embedders score
    all text of one language alike (e5: any Chinese text 0.84-0.88 against any Chinese question),
    so what tells a relevant chunk is how far it stands above this, not its cosine alone."""

    mean: float
    std: float
    count: int
    same_script: bool = False  # taken over chunks in the query's own script only

    def z(self, similarity: float) -> float:
        return (similarity - self.mean) / max(self.std, 1e-3)


def is_cjk(utf8_bytes: int, characters: int) -> bool:
    """Text mostly in a CJK script, told by its UTF-8 length: three bytes a CJK character, one a
    Latin letter. Cheap enough to compute in SQL for every chunk when the matrix loads."""
    return utf8_bytes > CJK_BYTES_PER_CHARACTER * max(characters, 1)


CJK_BYTES_PER_CHARACTER = 1.8
MIN_BACKGROUND = 50  # fewer chunks in the query's script: the background is taken over all


class VectorMatrix:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._collections = np.zeros(0, dtype=np.int64)
        self._cjk = np.zeros(0, dtype=bool)
        self._rows: dict[int, int] = {}
        self.size = 0

    def add(self, chunk_id: int, collection_id: int, vector: bytes, cjk: bool = False) -> None:
        if chunk_id in self._rows:
            self.remove([chunk_id])
        if self.size == len(self._ids):  # grow by doubling
            capacity = max(1024, 2 * self.size)
            self._matrix = np.resize(self._matrix, (capacity, self.dim))
            self._ids = np.resize(self._ids, capacity)
            self._collections = np.resize(self._collections, capacity)
            self._cjk = np.resize(self._cjk, capacity)
        row = self.size
        self._matrix[row] = np.frombuffer(vector, dtype=np.float32)
        self._ids[row] = chunk_id
        self._collections[row] = collection_id
        self._cjk[row] = cjk
        self._rows[chunk_id] = row
        self.size += 1

    def remove(self, chunk_ids: Iterable[int]) -> None:
        """Each removed row is filled by the last one."""
        for chunk_id in chunk_ids:
            row = self._rows.pop(chunk_id, None)
            if row is None:
                continue
            last = self.size - 1
            if row != last:
                moved = int(self._ids[last])
                self._matrix[row] = self._matrix[last]
                self._ids[row] = moved
                self._collections[row] = self._collections[last]
                self._cjk[row] = self._cjk[last]
                self._rows[moved] = row
            self.size = last

    def search(
        self, query: Sequence[float], k: int, collection_ids: Sequence[int] | None
    ) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) of the ``k`` nearest rows; rows are unit length."""
        return self.scan(query, k, collection_ids)[0]

    def scan(
        self, query: Sequence[float], k: int, collection_ids: Sequence[int] | None, cjk: bool | None = None
    ) -> tuple[list[tuple[int, float]], Background | None]:
        """The ``k`` nearest rows, and how similar the query is to the rows searched: to those in
        the query's script (``cjk``) when there are enough of them, since a query scores text of
        another language lower across the board."""
        if self.size == 0 or k <= 0:
            return [], None
        q = np.asarray(query, dtype=np.float32)
        q /= float(np.linalg.norm(q)) or 1.0
        scores = self._matrix[: self.size] @ q
        inside = (
            np.isin(self._collections[: self.size], collection_ids)
            if collection_ids is not None
            else np.ones(self.size, dtype=bool)
        )
        same = inside & (self._cjk[: self.size] == cjk) if cjk is not None else inside
        same_script = cjk is not None and int(same.sum()) >= MIN_BACKGROUND
        searched = scores[same] if same_script else scores[inside]
        background = (
            Background(float(searched.mean()), float(searched.std()), int(searched.size), same_script)
            if searched.size
            else None
        )
        if collection_ids is not None:
            scores = np.where(inside, scores, -np.inf)
        k = min(k, self.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self._ids[i]), float(scores[i])) for i in top if np.isfinite(scores[i])], background

    def similarities(self, query: Sequence[float], chunk_ids: Iterable[int]) -> dict[int, float]:
        rows = {chunk_id: self._rows[chunk_id] for chunk_id in chunk_ids if chunk_id in self._rows}
        if not rows:
            return {}
        q = np.asarray(query, dtype=np.float32)
        q /= float(np.linalg.norm(q)) or 1.0
        scores = self._matrix[list(rows.values())] @ q
        return {chunk_id: float(score) for chunk_id, score in zip(rows, scores, strict=True)}
