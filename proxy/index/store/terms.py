"""Which of a question's terms the keyword search runs, so that its cost stays bounded however
large the index grows (both engines).

FTS5 scores every row that matches any term of an ``OR`` query. At 100k chunks a question holding
a common word ("use", 可以) matched tens of thousands of rows and took 30-80 ms, though such a
word adds almost nothing to BM25 (its IDF is small). Here each term's document frequency is
looked up (the index's vocabulary, read in one pass and kept), and terms are taken rarest first
while the rows they match stay within ``BUDGET``; the rarest ``MIN_TERMS`` are always kept. On an
index of a few thousand chunks nothing is dropped. A pair of Chinese characters matches at most
the rows of its rarer character."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence

BUDGET = 5_000  # rows the kept terms may match together, counted by document frequency
MIN_TERMS = 2
REFRESH_SECONDS = 60.0  # the vocabulary is read again this often while the index changes
GROWTH = 0.25  # ... and at once (5 s apart at most) when its size changed by more than this share


class KeptFrequencies:
    """Document frequencies read in one pass and kept (both stores' keyword search). Read again
    when the number of chunks has changed: after ``REFRESH_SECONDS``, or within 5 s when it
    changed by more than ``GROWTH``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frequencies: dict[str, int] = {}
        self._rows = -1  # chunks when the frequencies were read
        self._read_at = -float("inf")

    def get(self, rows: int, read: Callable[[], dict[str, int]]) -> dict[str, int]:
        """The frequencies, from ``read()`` if they are due for it, the index holding ``rows``."""
        with self._lock:
            age = time.monotonic() - self._read_at
            changed = abs(rows - self._rows)
            due = self._rows < 0 or (
                changed and (age >= REFRESH_SECONDS or (age >= 5 and changed > GROWTH * self._rows))
            )
            if due:
                self._frequencies = read()
                self._rows, self._read_at = rows, time.monotonic()
            return self._frequencies


def choose_terms(
    terms: Sequence[str], frequencies: Mapping[str, int], stems: Mapping[str, str], budget: int = BUDGET
) -> dict[str, int | None]:
    """Of a query's ``terms``, those the keyword search runs: rarest first while the rows they
    match stay within ``budget`` (the rarest ``MIN_TERMS`` always), each with its document
    frequency if it is one token (a Chinese pair's is not known). ``stems``: each single word's
    token as the index stores it."""
    costs = {}
    for term in terms:
        tokens = term.split(" ") if " " in term else [stems[term]]
        counts = [frequencies.get(token, 0) for token in tokens]
        costs[term] = (min(counts), cost(counts))
    kept: set[str] = set()
    spent = 0
    for term in sorted(terms, key=lambda t: costs[t][0]):
        if len(kept) >= MIN_TERMS and spent + costs[term][1] > budget:
            break
        kept.add(term)
        spent += costs[term][1]
    return {t: None if " " in t else costs[t][0] for t in terms if t in kept}


def cost(counts: list[int]) -> int:
    """What a term costs FTS5, in rows, from its tokens' document frequencies: BM25 for each row
    it matches (at most the rarer token's), plus reading its tokens' lists (~8x cheaper a row)."""
    return min(counts) + sum(counts) // 8
