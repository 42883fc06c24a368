"""What PostgreSQL's keyword search stores and reads back: a chunk's ``tsvector`` made from the
same tokens as the SQLite index's (each CJK character a token, each adjacent pair a lexeme of its
own), and a term's count in a chunk recovered from ``ts_rank``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from proxy.index import textsearch

MAX_POSITION = 16383  # PostgreSQL's largest tsvector position
MAX_POSITIONS = 256  # ... and positions kept per lexeme


def _rank_counts() -> dict[float, int]:
    """What ``ts_rank`` gives a lexeme found ``count`` times (weights 1, no normalisation), for
    each count a tsvector keeps (1 to 256), computed in float32 step by step as PostgreSQL's
    ``calc_rank_or`` does, so that each value maps back to its count exactly."""
    values = {}
    for count in range(1, MAX_POSITIONS + 1):
        total = np.float32(0)
        for j in range(1, count + 1):
            total = np.float32(total + np.float32(np.float32(1) / np.float32(j * j)))
        inner = np.float32(np.float32(np.float32(1) + total) - np.float32(1))
        values[float(np.float32(float(inner) / 1.64493406685))] = count
    return values


_RANK_COUNTS = _rank_counts()


def count_of_rank(rank: float) -> int:
    """A lexeme's count in a chunk from its ``ts_rank`` (0: not there)."""
    if rank <= 1e-10:
        return 0
    return (
        _RANK_COUNTS.get(float(np.float32(rank)))
        or min(_RANK_COUNTS.items(), key=lambda item: abs(item[0] - rank))[1]
    )


def query_token(word: str) -> str:
    """A query's word as documents' tokens are made (lower case, no diacritics)."""
    return "".join(textsearch.tokens(word)) or word.lower()


def textsearch_token(lexeme: str) -> str:
    """A lexeme as a ``tsquery`` operand: quotes doubled (tokens are letters and digits only)."""
    return lexeme.replace("'", "''").replace("\\", "\\\\")


def tsvector_text(tokens: Sequence[str], stems: Mapping[str, str]) -> str:
    """A text's ``tsvector`` (as text) from its tokens: each token's lexeme (``stems``: English
    words stemmed) with its positions, and each pair of adjacent CJK characters as a lexeme of its
    own ("熊猫" where 熊 stands before 猫), so that every search term is one lexeme."""
    positions: dict[str, list[str]] = defaultdict(list)

    def add(lexeme: str, position: int) -> None:
        kept = positions[lexeme]
        if len(kept) < MAX_POSITIONS:
            kept.append(str(min(position, MAX_POSITION)))

    cjk = textsearch.cjk_characters(tokens)
    for position, token in enumerate(tokens, start=1):
        add(stems.get(token, token), position)
        if position < len(tokens) and cjk[position - 1] and cjk[position]:
            add(token + tokens[position], position)
    return " ".join(f"'{lexeme}':{','.join(p)}" for lexeme, p in positions.items())
