"""What both engines keep of an index's vectors for the relevance gate: how similar a query is to
every chunk searched (``Background``), computed from sums over the vectors (``Moments``) per
collection and script, which each engine keeps current as vectors come and go. SQLite's in-memory
matrix (``store/sqlite/matrix.py``) keeps them itself; each PostgreSQL replica, from the vector log
(``store/postgres/vector_stats.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

SCALE = 32767.0  # int16 per unit of a component; components of a unit vector lie in [-1, 1]


@dataclass(frozen=True, slots=True)
class Background:
    """The query's cosine similarity to every chunk searched: its mean and spread. Embedders score
    all text of one language alike (e5: any Chinese text 0.84-0.88 against any Chinese question),
    so what tells a relevant chunk is how far it stands above this, not its cosine alone."""

    mean: float
    std: float
    count: int
    same_script: bool = False  # taken over chunks in the query's own script only
    # the same over the chunks of the other script, when both scripts hold enough of them: a
    # chunk is ranked by how far it stands above its own script's (``by_script``)
    other: Background | None = None

    def z(self, similarity: float) -> float:
        return (similarity - self.mean) / max(self.std, 1e-3)

    def of(self, same_script: bool) -> Background:
        """The background a chunk in the query's script (or not) is measured against."""
        return self if same_script or self.other is None else self.other


MIN_BACKGROUND = 50  # fewer chunks in the query's script: the background is taken over all


class Moments:
    """Sums over a group of rows: the count, the vectors and their outer products. A query's mean
    similarity to the group is q·Σv/n, its mean square qᵀ(Σvvᵀ)q/n."""

    __slots__ = ("count", "first", "second")

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.first = np.zeros(dim, dtype=np.float64)
        self.second = np.zeros((dim, dim), dtype=np.float64)

    def change(self, codes: np.ndarray, sign: int) -> None:
        # float32 products, float64 sums: 100k rows take ~0.3 s instead of ~3 s in float64; the
        # rounding (1e-7 of a product) is far below what the background needs
        rows = codes.astype(np.float32) / np.float32(SCALE)
        self.count += sign * len(rows)
        self.first += sign * rows.sum(axis=0, dtype=np.float64)
        self.second += sign * (rows.T @ rows).astype(np.float64)


def background(
    moments: Mapping[tuple[int, bool], Moments], q: np.ndarray, chosen: set[int] | None, cjk: bool | None
) -> Background | None:
    """The unit query ``q``'s similarity to the groups (collection id, CJK) of ``chosen``
    collections (None: all): to those in its script when they hold ``MIN_BACKGROUND`` rows."""
    groups = [(key, m) for key, m in moments.items() if chosen is None or key[0] in chosen]
    same = [m for key, m in groups if key[1] == cjk]
    same_script = cjk is not None and sum(m.count for m in same) >= MIN_BACKGROUND
    searched = same if same_script else [m for _, m in groups]
    count = sum(m.count for m in searched)
    if count == 0:
        return None
    q64 = q.astype(np.float64)
    mean = sum(float(q64 @ m.first) for m in searched) / count
    square = sum(float(q64 @ m.second @ q64) for m in searched) / count
    return Background(mean, max(square - mean * mean, 0.0) ** 0.5, count, same_script)


def by_script(
    moments: Mapping[tuple[int, bool], Moments], q: np.ndarray, chosen: set[int] | None, cjk: bool | None
) -> Background | None:
    """``background``, with the other script's (``Background.other``) when both scripts hold
    ``MIN_BACKGROUND`` rows of the chosen collections.

    e5 scores all text of one language alike: a Chinese question stands nearer to any Chinese
    paragraph (0.84-0.88) than to the English abstract it asks about (0.84). Where a collection
    holds both, ranking by cosine leaves the other script out; ranking each chunk by how far it
    stands above its own script's background lets the right one through, in either script."""
    own = background(moments, q, chosen, cjk)
    if own is None or not own.same_script or cjk is None:
        return own
    other = background(moments, q, chosen, not cjk)
    if other is None or not other.same_script:
        return own
    return Background(own.mean, own.std, own.count, True, other)


def codes_of(vectors: np.ndarray) -> np.ndarray:
    """Float vectors (rows) as the int16 codes of their unit vectors: what the matrix stores and
    the moments sum."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.rint(vectors / np.where(norms > 0, norms, 1.0) * SCALE).astype(np.int16)


def unit(vector: Sequence[float]) -> np.ndarray:
    q = np.asarray(vector, dtype=np.float32).copy()
    q /= float(np.linalg.norm(q)) or 1.0
    return q
