"""Keyword search text for FTS5, English and Chinese in one table.

FTS5's ``unicode61`` tokenizer keeps a run of Chinese characters as one token, so 熊猫 inside a
sentence is never found, and ``trigram`` cannot match two-character words. Here every CJK
character is indexed as a token of its own (a space on each side), and a query's Chinese becomes
phrases of adjacent characters: 大熊猫 → "大 熊" OR "熊 猫", each matching only where the two
characters stand together. Other text is untouched, so ``porter unicode61`` still stems English.

On CMRC 2018 dev (848 passages, 3,219 questions; ``bench/fts_chinese.py``) this scores recall@1
0.973 against 0.969 for jieba word segmentation and 0.902 for trigram, with the smallest index and
no dictionary to load or keep in step (BENCHMARKS.md).

Both sides keep a Traditional Chinese character as its Simplified one (``fold``, a table of
4,105 characters from OpenCC): as case is folded for English, so that a question asked in
Traditional finds a paragraph written in Simplified, and the other way round.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cache
from importlib import resources

import numpy as np

# Scripts written without spaces between words: CJK Unified Ideographs (basic, extensions A-H),
# compatibility ideographs, 々〆〇, hiragana and katakana. Hangul is written with spaces; CJK
# punctuation already separates tokens in unicode61.
CJK_RANGES = (
    (0x3005, 0x3007),
    (0x3040, 0x30FF),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2FA1F),
    (0x30000, 0x323AF),
)
CJK_CLASS = "".join(f"{chr(low)}-{chr(high)}" for low, high in CJK_RANGES)
_QUERY_PIECE = re.compile(f"(?P<cjk>[{CJK_CLASS}]+)|(?P<word>[^\\W_{CJK_CLASS}]+)")
# Query side only: particles and question words (什么/怎么 → 什, 么); pairs with them match anywhere.
STOP_CHARS = frozenset("的了吗呢吧么哪谁几什")
# Query side only: English function words. BM25 gives them little weight anyway, but each one
# matches most rows, and scoring all those rows made a 15-word question 6x slower at 100k chunks.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves""".split()
)


def index_text(text: str) -> str:
    """The text as indexed (``index_texts`` of one text)."""
    return index_texts([text])[0]


def index_texts(texts: Sequence[str]) -> list[str]:
    """Each text as indexed, computed for all of them at once with numpy (3x faster on Chinese
    than a regular expression per run of CJK characters): each CJK character gets a space on
    each side, so that FTS5 makes it a token of its own, and is folded (``fold``)."""
    joined = "".join(texts)
    if joined.isascii():
        return list(texts)
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    cjk = _cjk_table()[codes]
    if not cjk.any():
        return list(texts)
    spaced = np.full((len(codes), 3), ord(" "), dtype=np.uint32)
    spaced[:, 1] = codes
    spaced[cjk, 1] = _fold_table()[codes[cjk]]
    keep = np.ones((len(codes), 3), dtype=bool)
    keep[:, 0] = keep[:, 2] = cjk
    text = spaced[keep].tobytes().decode("utf-32-le", "surrogatepass")
    # where each text starts in the result: two characters more for each CJK character before it
    starts = np.cumsum([0, *(len(t) for t in texts)])
    added = np.concatenate(([0], np.cumsum(cjk, dtype=np.int64)))[starts] * 2 + starts
    bounds = added.tolist()
    return [text[bounds[i] : bounds[i + 1]] for i in range(len(texts))]


def fold(text: str) -> str:
    """The text with each Traditional Chinese character as its Simplified one (乾 → 干, 後 → 后,
    裡 → 里), what the keyword index holds and searches: the first of OpenCC's Simplified
    characters for each of its Traditional ones (``proxy/data/hanzi_fold.txt``,
    ``bench/hanzi_fold.py``). Not a conversion: words are not rewritten, characters are matched."""
    return text if text.isascii() else text.translate(_fold_map())


@cache
def _fold_map() -> dict[int, int]:
    table = resources.files("proxy.data").joinpath("hanzi_fold.txt").read_text(encoding="utf-8")
    return {ord(line[0]): ord(line[2]) for line in table.splitlines()}


@cache
def _fold_table() -> np.ndarray:
    """``fold`` for every code point up to the last CJK range's."""
    table = np.arange(CJK_RANGES[-1][1] + 1, dtype=np.uint32)
    for traditional, simplified in _fold_map().items():
        table[traditional] = simplified
    return table


@cache
def _cjk_table() -> np.ndarray:
    """For every code point, whether it is in ``CJK_RANGES`` (1.1 MB)."""
    table = np.zeros(0x110000, dtype=bool)
    for low, high in CJK_RANGES:
        table[low : high + 1] = True
    return table


def quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _weak(word: str) -> bool:
    """A word that matches by accident more than by meaning: one letter ("s" of "turbine's") or
    a number of one or two digits."""
    return len(word) == 1 or (word.isdigit() and len(word) <= 2)


def query_terms(query: str, stop_chars: frozenset[str] = STOP_CHARS) -> list[str]:
    """The query's search terms: Chinese as pairs of adjacent characters (a lone character as
    itself), folded (``fold``); other words as they are, without function words and weak words
    unless nothing else is left."""
    terms: list[str] = []
    words: list[str] = []
    for match in _QUERY_PIECE.finditer(fold(query)):
        run = match.group("cjk")
        if run is None:
            words.append(match.group())
        elif len(run) == 1:
            if run not in stop_chars:
                terms.append(run)
        else:
            terms += [
                f"{a} {b}"
                for a, b in zip(run, run[1:], strict=False)
                if a not in stop_chars and b not in stop_chars
            ]
    content_words = [w for w in words if w.lower() not in STOP_WORDS]
    strong_words = [w for w in content_words if not _weak(w)]
    if terms or strong_words:
        terms += strong_words
    else:  # a question of function or weak words only keeps them
        terms += content_words or words
    return list(dict.fromkeys(t for t in terms if t.strip()))


def match_query(query: str, stop_chars: frozenset[str] = STOP_CHARS) -> str | None:
    """An FTS5 MATCH expression, terms OR-ed (rank with bm25), or None if nothing is searchable."""
    return " OR ".join(quote(t) for t in query_terms(query, stop_chars)) or None


_TOKEN = re.compile(r"[^\W_]+")


def tokens(text: str) -> list[str]:
    """The text's tokens as FTS5's ``unicode61 remove_diacritics 2`` makes them from
    ``index_text``: lower case, without diacritics, split at everything but letters and digits,
    each CJK character a token of its own. The PostgreSQL store indexes these (its own parser
    splits text otherwise, and keeps a run of Chinese characters as one word)."""
    spaced = index_text(text).lower()
    if not spaced.isascii():
        decomposed = unicodedata.normalize("NFKD", spaced)
        spaced = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _TOKEN.findall(spaced)


def cjk_characters(tokens: Sequence[str]) -> list[bool]:
    """For each token, whether it is one CJK character (as ``tokens`` makes them)."""
    table = _cjk_table()
    return [len(token) == 1 and bool(table[ord(token)]) for token in tokens]


def is_cjk_pair(word: str) -> bool:
    """Two CJK characters: a pair's lexeme in the PostgreSQL store."""
    return len(word) == 2 and all(_cjk_table()[ord(c)] for c in word)
