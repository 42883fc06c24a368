"""Each collection's own cosine bar for questions in a script it holds almost no text in: a
Chinese question on English papers, an English one on Chinese notes.

Such a question has no background in its own script to stand out from, so the relevance gate
falls back to a cosine threshold. The embedder's fixed one (e5: 0.87 Latin, 0.90 CJK) is set
for text in the question's own script, and a cross-language similarity rarely reaches it: the
right paper for a Chinese claim scores about 0.84.

The bar is measured on the collection itself. The shipped everyday prompts
(``proxy/data/everyday_prompts.jsonl``: small talk, coding, arithmetic, translation, advice,
writing, general knowledge, in English, Simplified and Traditional Chinese) are searched in the
collection as chats are. The bar is where their best chunks stop: the 99th percentile. An
everyday chat in that script then gets context about once in a hundred, whatever the collection
holds, and a related question passes wherever it stands above everyday talk.

The same prompts give every question a contrast (``Everyday``): how near the nearest of them
stands to it. A chunk is related to a question when it stands nearer to the question than any
everyday chat does. A question like everyday talk ("how do I sleep better", "translate this
into French") has a near neighbour among them, and only a chunk closer still passes; a question
about the collection's own matter has none, and the contrast costs it nothing.

Measured by ``bench/gate_evidence.py`` (BENCHMARKS.md)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from proxy.index.vectors import unit
from proxy.logging import get_logger
from proxy.paths import cache_directory, write_cache
from proxy.text import asked_in_cjk

if TYPE_CHECKING:
    from proxy.index.service import IndexService

log = get_logger("ragproxy.index")

SHARE = 0.01  # of everyday prompts a bar lets through
MIN_PROMPTS = 100  # everyday prompts with an answer needed to set a bar
MIN_CHUNKS = 50  # a collection smaller than this keeps the embedder's thresholds
TOP_K = 5
RECHECK = 1800.0  # seconds between checks whether a collection changed enough to measure again
SOON = 10.0  # ... while the index, or a collection, still waits for its vectors
CHANGED = 0.2  # share of chunks added or removed since the last measure that calls for another
PENDING = 0.05  # a collection is measured once at most this share of its chunks lack a vector
AGREE = 0.999  # least cosine of a cached everyday prompt's vector to its fresh one
NOTE = "calibration"  # the index's note the last calibration is written to (``ragproxy status``)


@dataclass(frozen=True, slots=True)
class Bar:
    collection: str
    cjk: bool  # for questions in a CJK script (else Latin)
    cosine: float
    prompts: int  # everyday prompts it was measured on
    chunks: int  # the collection's chunks then

    def describe(self) -> str:
        script = "Chinese" if self.cjk else "English"
        return f"{script} questions: cosine {self.cosine:.3f} (from {self.prompts} everyday prompts)"


@dataclass(frozen=True, slots=True)
class Everyday:
    """The shipped everyday prompts as the index's embedder places them."""

    prompts: tuple[tuple[str, bool], ...]  # (text, asked in a CJK script)
    vectors: np.ndarray  # one unit row a prompt

    def nearest(self, vector: Sequence[float]) -> float:
        """The cosine of the everyday prompt nearest to a question's embedding."""
        return float(np.max(self.vectors @ unit(vector)))

    def vector(self, index: int) -> list[float]:
        return [float(x) for x in self.vectors[index]]


def everyday_prompts() -> list[tuple[str, bool]]:
    """The shipped everyday prompts, each with whether it is asked in a CJK script."""
    text = resources.files("proxy.data").joinpath("everyday_prompts.jsonl").read_text(encoding="utf-8")
    prompts = [json.loads(line)["text"] for line in text.splitlines() if line.strip()]
    return [(prompt, asked_in_cjk(prompt)) for prompt in prompts]


class Calibration:
    """The bars measured so far, by collection and script, replaced as collections change."""

    def __init__(self) -> None:
        self._bars: dict[tuple[str, bool], Bar] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.everyday: Everyday | None = None  # embedded by ``prepare``
        self.measured_at: float | None = None  # when the last round of ``measure`` ended (epoch)

    def nearest_everyday(self, vector: Sequence[float]) -> float | None:
        """How near the nearest everyday prompt stands to a question (None until embedded)."""
        everyday = self.everyday
        return None if everyday is None else everyday.nearest(vector)

    def prepare(self, service: IndexService) -> Everyday | None:
        """The everyday prompts embedded by the index's embedder, once (None: stopped first).
        Kept in the cache directory for the next start, and taken from it if two prompts
        embedded afresh still agree with it (another engine or version of the same model does
        not)."""
        if self.everyday is None and service.has_vectors():
            started = time.monotonic()
            prompts = everyday_prompts()
            cached = _cached(service, prompts)
            if cached is not None:
                self.everyday = Everyday(tuple(prompts), cached)
                return self.everyday
            rows = []
            for text, _ in prompts:
                if self._stop.is_set():  # the index is closing
                    return None
                rows.append(unit(service.question_vector(text)))
                time.sleep(0)  # let a chat's search go first
            self.everyday = Everyday(tuple(prompts), np.vstack(rows))
            _keep(service, prompts, self.everyday.vectors)
            seconds = round(time.monotonic() - started, 1)
            log.info("index.everyday_embedded", prompts=len(rows), seconds=seconds)
        return self.everyday

    def bars(self) -> dict[tuple[str, bool], float]:
        with self._lock:
            return {key: bar.cosine for key, bar in self._bars.items()}

    def described(self, collection: str) -> list[str]:
        with self._lock:
            return [bar.describe() for (name, _), bar in sorted(self._bars.items()) if name == collection]

    def measure(self, service: IndexService, collections: Mapping[str, int] | None = None) -> None:
        """Measures the bars of ``collections`` (name: chunks; all of the index's if None)."""
        if not service.has_vectors():
            return
        if collections is None:
            collections = {name: chunks for name, (chunks, _) in _chunk_counts(service).items()}
        everyday = self.prepare(service)
        if everyday is None:
            return
        for name, chunks in collections.items():
            if chunks < MIN_CHUNKS or self._stop.is_set():
                continue
            for cjk in (False, True):
                asked = [i for i, (_, script) in enumerate(everyday.prompts) if script == cjk]
                bar = _measure(service, name, chunks, everyday, asked, cjk, self._stop)
                with self._lock:
                    if bar is None:
                        self._bars.pop((name, cjk), None)
                    else:
                        self._bars[(name, cjk)] = bar
                if bar is not None:
                    log.info(
                        "index.calibrated",
                        collection=name,
                        script="cjk" if cjk else "latin",
                        cosine=round(bar.cosine, 4),
                        prompts=bar.prompts,
                    )
        if not self._stop.is_set():
            self.measured_at = time.time()
            self._note(service)

    def _note(self, service: IndexService) -> None:
        """The calibration, written into the index for ``ragproxy status`` (a read-only index,
        or one that cannot be written now, keeps it in memory only)."""
        if getattr(service.store, "readonly", False):
            return
        with self._lock:
            bars = [
                {"collection": b.collection, "cjk": b.cjk, "cosine": round(b.cosine, 4), "prompts": b.prompts}
                for b in self._bars.values()
            ]
        everyday = self.everyday
        note = {
            "measured_at": self.measured_at,
            "embedder": service.store.embedder()[0],
            "everyday_prompts": 0 if everyday is None else len(everyday.prompts),
            "bars": bars,
        }
        try:
            service.store.set_note(NOTE, json.dumps(note))
        except Exception as exc:  # a busy or read-only index: shown on the status page only
            log.warning("index.calibration_not_noted", error=str(exc)[:200])

    def start(self, service: IndexService) -> None:
        """Measures in a thread of its own: the everyday prompts embedded first, then each
        collection once it has its vectors, and again when it has changed by a fifth."""

        def run() -> None:
            measured: dict[str, int] = {}
            while not self._stop.is_set():
                wait = RECHECK
                try:
                    if self.prepare(service) is None:  # no vectors yet, or stopped
                        self._stop.wait(SOON)
                        continue
                    counts = _chunk_counts(service)
                    ready = {n: c for n, (c, pending) in counts.items() if pending <= PENDING * c}
                    due = {n: c for n, c in ready.items() if _changed(measured.get(n), c)}
                    if due:
                        self.measure(service, due)
                        measured.update(due)
                    if len(ready) < len(counts):
                        wait = SOON
                except Exception as exc:  # closed meanwhile, or a search failed: the next round
                    log.warning("index.calibration_failed", error=str(exc)[:200])
                self._stop.wait(wait)

        self._thread = threading.Thread(target=run, name="ragproxy-calibrate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _cache_path(service: IndexService, prompts: Sequence[tuple[str, bool]]) -> Path:
    embedder = service.embedder
    key = json.dumps([embedder.name, getattr(embedder, "engine", ""), embedder.dim, [p for p, _ in prompts]])
    return cache_directory() / f"everyday-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"


def _cached(service: IndexService, prompts: Sequence[tuple[str, bool]]) -> np.ndarray | None:
    """The everyday prompts' vectors from an earlier start, if two embedded now agree."""
    try:
        vectors: np.ndarray = np.asarray(np.load(_cache_path(service, prompts), allow_pickle=False))
    except (OSError, ValueError):
        return None
    if vectors.shape != (len(prompts), service.embedder.dim):
        return None
    for i in (0, len(prompts) - 1):
        if float(vectors[i] @ unit(service.question_vector(prompts[i][0]))) < AGREE:
            return None
    found: np.ndarray = vectors.astype(np.float32)
    return found


def _keep(service: IndexService, prompts: Sequence[tuple[str, bool]], vectors: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, vectors.astype(np.float32), allow_pickle=False)
    write_cache(_cache_path(service, prompts), buffer.getvalue())


def _changed(before: int | None, now: int) -> bool:
    return before is None or abs(now - before) > CHANGED * max(before, 1)


def _chunk_counts(service: IndexService) -> dict[str, tuple[int, int]]:
    """Each collection's chunks, and how many of them still lack a vector."""
    return {c["name"]: (c["chunks"], c["pending_vectors"]) for c in service.store.status()["collections"]}


def _measure(
    service: IndexService,
    name: str,
    chunks: int,
    everyday: Everyday,
    asked: Sequence[int],
    cjk: bool,
    stop: threading.Event,
) -> Bar | None:
    """The bar for questions in ``cjk``'s script, if the collection holds (almost) no text in
    it: asked of the collection, those questions have no background of their own."""
    best: list[float] = []
    for index in asked:
        if stop.is_set():  # the index is closing
            return None
        # embedded once (``prepare``), not through the cache of recent questions: follow-ups use it
        ranking = service.rank(everyday.prompts[index][0], TOP_K, [name], embedded=everyday.vector(index))
        if ranking.background is not None and ranking.background.same_script:
            return None  # the collection has text in this script: the background decides
        # every hit is judged by the bar: those in the question's script too (there are too few
        # of them for a background), which stand closest to it
        similarities = [
            ranking.similarity[hit.chunk_id] for hit in ranking.hits if hit.chunk_id in ranking.similarity
        ]
        if similarities:
            best.append(max(similarities))
        time.sleep(0)  # let a chat's search go first
    if len(best) < MIN_PROMPTS:
        return None
    best.sort()
    cosine = best[min(len(best) - 1, int((1 - SHARE) * len(best)))]
    return Bar(name, cjk, cosine, len(best), chunks)


def note_of(service: IndexService) -> dict[str, Any] | None:
    """The last calibration a server wrote into the index (None: none yet)."""
    try:
        text = service.store.note(NOTE)
    except Exception:  # an index that cannot be read now: nothing to show
        return None
    found: dict[str, Any] | None = json.loads(text) if text else None
    return found


def described_note(note: dict[str, Any], embedder: str | None) -> list[str]:
    """A calibration note as ``ragproxy status`` shows it."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(note["measured_at"]))
    prompts = note["everyday_prompts"]
    lines = [f"relevance gate: calibrated {when}; each question held against {prompts} everyday prompts"]
    for bar in note["bars"]:
        script = "Chinese" if bar["cjk"] else "English"
        lines.append(
            f"  {bar['collection']}: {script} questions, cosine {bar['cosine']:.3f} "
            f"(from {bar['prompts']} everyday prompts)"
        )
    if note.get("embedder") != embedder:
        lines.append("  (measured with another embedder: the server measures again when it starts)")
    return lines
