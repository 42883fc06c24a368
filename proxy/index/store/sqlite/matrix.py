"""All vectors of an index in memory, searched in two passes: sign bits find the candidates,
16-bit vectors score them. sqlite-vec's table stays the storage of record; the matrix is loaded
from it and kept in step by the store.

- **Scores:** each unit vector is held as int16 (component × 32767), 2 × dim bytes per chunk
  (77 MB per 100k chunks at 384 dimensions, against 154 MB as float32). A score is off the
  float32 cosine by ~1e-5, float16's precision; int16 is kept because numpy turns it into float32
  ten times faster than float16.
- **Candidates:** past ``FIRST_PASS_FROM`` rows, each row also has one bit per dimension: the
  sign of its difference from the mean vector (e5's vectors share a large common component, and
  raw signs say little). A query counts mismatched bits, those of its larger components counting
  more, over all rows (48 bytes a row), and only the best ``candidates()`` rows are scored. Below
  that size every row is scored: the search is exact.
- **Background:** how similar the query is to every chunk searched (its mean and spread) comes
  from the sums of the vectors and of their outer products per collection and script, which the
  matrix keeps as rows come and go (``proxy.index.vectors``, shared with PostgreSQL), so no pass
  over all rows is needed for it.

Measured in BENCHMARKS.md ("Index: throughput and query latency")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from proxy.index.vectors import SCALE, Background, Moments, by_script, codes_of, unit

FIRST_PASS_FROM = 20_000  # rows: below this every row is scored (~3 ms at 20k, no recall lost)
MIN_CANDIDATES = 4096
CANDIDATE_SHARE = 16  # past MIN_CANDIDATES, one row in this many is scored
BLOCK = 1024  # rows scored at a time


def candidates(rows: int, k: int, first_pass_from: int = FIRST_PASS_FROM) -> int:
    """How many of ``rows`` the second pass scores."""
    if rows < first_pass_from:
        return rows
    return min(rows, max(k, MIN_CANDIDATES, rows // CANDIDATE_SHARE))


class VectorMatrix:
    def __init__(self, dim: int, *, first_pass_from: int = FIRST_PASS_FROM) -> None:
        self.dim = dim
        self.first_pass_from = first_pass_from
        self.size = 0
        self._codes = np.zeros((0, dim), dtype=np.int16)
        self._ids = np.zeros(0, dtype=np.int64)
        self._collections = np.zeros(0, dtype=np.int64)
        self._cjk = np.zeros(0, dtype=bool)
        # each chunk id's row (-1: none), by id: ids are never reused, so 4 bytes for every id
        # given so far, against ~100 bytes a chunk in a dict
        self._row_of = np.full(0, -1, dtype=np.int32)
        self._moments: dict[tuple[int, bool], Moments] = {}
        self._words = (dim + 63) // 64
        self._bits = np.zeros((self._words, 0), dtype=np.uint64)  # one array per word: fast scans
        self._centre: np.ndarray | None = None  # the mean code when the bits were made
        self._fitted_at = 0
        self._scratch = _Scratch()

    # -- changes ----------------------------------------------------------------------------------
    def add(self, chunk_id: int, collection_id: int, vector: bytes, cjk: bool = False) -> None:
        self.add_many([chunk_id], [collection_id], np.frombuffer(vector, dtype=np.float32)[None, :], [cjk])

    def add_many(
        self,
        chunk_ids: Sequence[int],
        collection_ids: Sequence[int],
        vectors: np.ndarray,
        cjk: Sequence[bool],
    ) -> None:
        """Rows for these chunks (replacing any they had); ``vectors`` is float32, one per row."""
        self.remove([chunk_id for chunk_id in chunk_ids if self._row(chunk_id) >= 0])
        count = len(chunk_ids)
        if count == 0:
            return
        codes = codes_of(vectors)
        self._reserve(self.size + count)
        start, end = self.size, self.size + count
        self._codes[start:end] = codes
        self._ids[start:end] = chunk_ids
        self._collections[start:end] = collection_ids
        self._cjk[start:end] = cjk
        ids = np.asarray(chunk_ids, dtype=np.int64)
        if int(ids.max()) >= len(self._row_of):
            grown = np.full(max(int(ids.max()) + 1, 2 * len(self._row_of)), -1, dtype=np.int32)
            grown[: len(self._row_of)] = self._row_of
            self._row_of = grown
        self._row_of[ids] = np.arange(start, end, dtype=np.int32)
        self.size = end
        for key in set(zip(collection_ids, cjk, strict=True)):
            group = (self._collections[start:end] == key[0]) & (self._cjk[start:end] == key[1])
            self._moments.setdefault(key, Moments(self.dim)).change(codes[group], +1)
        if self._centre is not None and self.size < 2 * self._fitted_at:
            self._bits[:, start:end] = self._signs(codes)
        elif self.size >= self.first_pass_from:
            self._fit()

    def remove(self, chunk_ids: Iterable[int]) -> None:
        """Each removed row is filled by the last one. The sums are taken down once per group,
        not once per row: a document's hundreds of chunks go in one call."""
        rows = sorted({row for chunk_id in chunk_ids if (row := self._row(chunk_id)) >= 0}, reverse=True)
        if not rows:
            return
        picked = np.array(rows)
        collections, scripts = self._collections[picked], self._cjk[picked]
        for key in set(zip(collections.tolist(), scripts.tolist(), strict=True)):
            moments = self._moments[key]
            moments.change(self._codes[picked[(collections == key[0]) & (scripts == key[1])]], -1)
            if moments.count == 0:
                del self._moments[key]
        self._row_of[self._ids[picked]] = -1
        for row in rows:  # highest first: the last row, moved into a gap, is never one to remove
            last = self.size - 1
            if row != last:
                moved = int(self._ids[last])
                self._codes[row] = self._codes[last]
                self._ids[row] = moved
                self._collections[row] = self._collections[last]
                self._cjk[row] = self._cjk[last]
                self._bits[:, row] = self._bits[:, last]
                self._row_of[moved] = row
            self.size = last

    def _row(self, chunk_id: int) -> int:
        return int(self._row_of[chunk_id]) if 0 <= chunk_id < len(self._row_of) else -1

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._ids):
            return
        capacity = max(1024, rows, 2 * len(self._ids))  # grow by doubling

        def grown(array: np.ndarray, axis: int = 0) -> np.ndarray:
            shape = list(array.shape)
            shape[axis] = capacity
            bigger = np.zeros(shape, dtype=array.dtype)
            bigger[(slice(None),) * axis + (slice(0, self.size),)] = array[
                (slice(None),) * axis + (slice(0, self.size),)
            ]
            return bigger

        self._codes = grown(self._codes)
        self._ids = grown(self._ids)
        self._collections = grown(self._collections)
        self._cjk = grown(self._cjk)
        self._bits = grown(self._bits, axis=1)

    def _fit(self) -> None:
        """Sign bits of every row against the current mean; made again each time the matrix has
        doubled, so the mean follows what the index holds."""
        self._centre = self._codes[: self.size].mean(axis=0, dtype=np.float64).astype(np.float32)
        self._fitted_at = self.size
        for start in range(0, self.size, 65536):  # bounded temporary memory
            end = min(self.size, start + 65536)
            self._bits[:, start:end] = self._signs(self._codes[start:end])

    def _signs(self, codes: np.ndarray) -> np.ndarray:
        assert self._centre is not None
        return _pack(codes > self._centre, self._words).T

    # -- search -----------------------------------------------------------------------------------
    def search(
        self, query: Sequence[float], k: int, collection_ids: Sequence[int] | None
    ) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) of the ``k`` nearest rows."""
        return self.scan(query, k, collection_ids)[0]

    def scan(
        self, query: Sequence[float], k: int, collection_ids: Sequence[int] | None, cjk: bool | None = None
    ) -> tuple[list[tuple[int, float]], Background | None]:
        """The ``k`` nearest rows, and how similar the query is to the rows searched: to those in
        the query's script (``cjk``) when there are enough of them, since a query scores text of
        another language lower across the board."""
        if self.size == 0 or k <= 0:
            return [], None
        q = unit(query)
        chosen = set(collection_ids) if collection_ids is not None else None
        inside = np.isin(self._collections[: self.size], list(chosen)) if chosen is not None else None
        found_background = by_script(self._moments, q, chosen, cjk)
        other = found_background.other if found_background is not None else None
        rows = self._candidates(q, k, inside, by_script=other is not None)
        scores = self._score(rows, q)
        if inside is not None:
            kept = inside[rows]
            rows, scores = rows[kept], scores[kept]
        k = min(k, len(rows))
        if k == 0:
            return [], found_background
        ranked = scores
        if found_background is not None and other is not None:  # each chunk above its own script's
            own = self._cjk[rows] == cjk
            ranked = np.where(
                own,
                (scores - found_background.mean) / max(found_background.std, 1e-3),
                (scores - other.mean) / max(other.std, 1e-3),
            )
        top = np.argpartition(-ranked, k - 1)[:k]
        top = top[np.argsort(-ranked[top], kind="stable")]
        found = [(int(self._ids[rows[i]]), float(scores[i])) for i in top]
        return found, found_background

    def _candidates(
        self, q: np.ndarray, k: int, inside: np.ndarray | None, *, by_script: bool = False
    ) -> np.ndarray:
        """Rows worth scoring: all of them, or those whose sign bits differ least from the query's,
        a mismatch on one of the query's larger components counting three to five times more.
        ``by_script``: as many of each script (a script's rows differ alike from a query in the
        other: taken together, the query's own script would crowd the other out)."""
        wanted = candidates(self.size, k, self.first_pass_from)
        if self._centre is None or wanted >= self.size:
            return np.arange(self.size)
        work = self._scratch.first_pass(self.size)
        centred = q * SCALE - self._centre
        weight = np.abs(centred)
        large = weight >= np.median(weight)
        extra = round(4 * (weight[large].mean() / max(float(weight[~large].mean()), 1e-9) - 1))
        signs, heavy = _pack(np.stack([centred > 0, large]), self._words)
        mismatched, bits, total, major = work
        total.fill(0)
        major.fill(0)
        for word in range(self._words):
            np.bitwise_xor(self._bits[word, : self.size], signs[word], out=mismatched)
            np.add(total, np.bitwise_count(mismatched, out=bits), out=total)
            np.bitwise_and(mismatched, heavy[word], out=mismatched)
            np.add(major, np.bitwise_count(mismatched, out=bits), out=major)
        np.multiply(major, np.uint16(min(max(extra, 0), 60)), out=major)
        np.multiply(total, np.uint16(4), out=total)
        distance = np.add(total, major, out=total)
        if inside is not None:
            distance[~inside] = np.iinfo(np.uint16).max
        if not by_script:
            return _nearest(distance, wanted)
        scripts = self._cjk[: self.size]
        far = np.iinfo(np.uint16).max
        latin, cjk = (_nearest(np.where(scripts == s, distance, far), wanted) for s in (False, True))
        return np.union1d(latin, cjk)

    def _score(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Cosine similarity of the query to these rows (ascending row numbers), a block at a
        time: the block's float32 copy stays in the CPU's cache, and the buffers stay small."""
        scores = np.empty(len(rows), dtype=np.float32)
        scaled = q / SCALE
        codes, floats = self._scratch.second_pass(min(len(rows), BLOCK), self.dim)
        everything = len(rows) == self.size
        for start in range(0, len(rows), BLOCK):
            end = min(start + BLOCK, len(rows))
            block = floats[: end - start]
            if everything:
                np.copyto(block, self._codes[start:end], casting="unsafe")
            else:
                np.take(self._codes, rows[start:end], axis=0, out=codes[: end - start], mode="clip")
                np.copyto(block, codes[: end - start], casting="unsafe")  # ("raise" copies twice)
            np.dot(block, scaled, out=scores[start:end])
        return scores

    def similarities(self, query: Sequence[float], chunk_ids: Iterable[int]) -> dict[int, float]:
        rows = {chunk_id: row for chunk_id in chunk_ids if (row := self._row(chunk_id)) >= 0}
        if not rows:
            return {}
        scores = self._codes[list(rows.values())].astype(np.float32) @ (unit(query) / SCALE)
        return {chunk_id: float(score) for chunk_id, score in zip(rows, scores, strict=True)}


class _Scratch:
    """Working arrays kept between searches: allocating ~15 MB afresh each time (page faults on
    new memory) cost more than the arithmetic. The store's lock keeps searches one at a time."""

    def __init__(self) -> None:
        self._first: tuple[np.ndarray, ...] = ()
        self._codes = np.zeros((0, 0), dtype=np.int16)
        self._floats = np.zeros((0, 0), dtype=np.float32)

    def first_pass(self, rows: int) -> tuple[np.ndarray, ...]:
        if not self._first or len(self._first[0]) < rows:
            size = max(rows, 2 * len(self._first[0]) if self._first else 0)
            self._first = tuple(np.zeros(size, dtype=t) for t in (np.uint64, np.uint8, np.uint16, np.uint16))
        return tuple(array[:rows] for array in self._first)

    def second_pass(self, rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        if self._floats.shape[0] < rows or self._floats.shape[1] != dim:
            size = max(rows, 2 * self._floats.shape[0])
            self._codes = np.zeros((size, dim), dtype=np.int16)
            self._floats = np.zeros((size, dim), dtype=np.float32)
        return self._codes[:rows], self._floats[:rows]


def _pack(flags: np.ndarray, words: int) -> np.ndarray:
    """Boolean flags (rows × dim) as 64-bit words (rows × words), zero past the last dimension."""
    padded = np.zeros((flags.shape[0], words * 64), dtype=bool)
    padded[:, : flags.shape[1]] = flags
    return np.packbits(padded, axis=1).view(np.uint64)


def _nearest(distance: np.ndarray, wanted: int) -> np.ndarray:
    """The rows within the smallest distance that takes in ``wanted`` of them (ties at that
    distance included), in memory order: a histogram of small integers is 4x faster than
    argpartition, and ordered rows are read faster."""
    cut = int(np.searchsorted(np.cumsum(np.bincount(distance)), wanted))
    return np.flatnonzero(distance <= cut)
