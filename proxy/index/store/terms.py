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

import gzip
import re
import string
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import cache
from importlib import resources

BUDGET = 5_000  # rows the kept terms may match together, counted by document frequency
MIN_TERMS = 2
SPELLED_LETTERS = 6  # a word this long or longer that the index does not hold may be a typo
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


_WORD = re.compile(r"(?<![^\W\d_])[A-Za-z]+(?![^\W\d_])")  # a word of Latin letters only ("naïve": none)


def spelled(
    query: str,
    frequencies: Mapping[str, int],
    stem: Callable[[Collection[str], bool], Mapping[str, str]],
) -> str:
    """The query with each misspelt word put right (both stores' ``spelled``): a word of
    ``SPELLED_LETTERS`` Latin letters or more that no chunk holds (by its stem), where one typo
    away (two neighbouring letters swapped, one dropped, one added, one replaced) stands a word
    the index holds; of several, the one most chunks hold. "hmoocysteine" becomes "homocysteine",
    "microenviroment" "microenvironment"; a word no chunk holds nor comes near ("sourdough")
    stays as it is, and so does a typo that changes the stem past one edit ("methylaion").
    A keyword search leans on a question's rarest word, the one a typo takes away; the question's
    embedding moves too. ``stem(words, keep)``: words as the index stores them (lower case,
    stemmed), kept for later questions if ``keep`` (the question's words, not the hundreds of
    spellings tried for one).

    A word in the shipped English word list is never taken for a typo ("country" on Chinese
    notes that hold "county"), nor is a name with capitals inside ("ComYMV").

    The typos are undone on the stem, where the index's vocabulary can be asked in memory
    (hundreds of candidates a word, no tokenizer call each); the word is then mended the same
    way, and taken only if the index stems it to the mended stem."""
    words = [w for w in dict.fromkeys(_WORD.findall(query)) if _maybe_misspelt(w)]
    if not words:
        return query
    stems = stem([w.lower() for w in words], True)
    guessed: dict[str, tuple[str, str]] = {}  # word -> (mended word, mended stem)
    for word in words:
        lower = word.lower()
        root = stems[lower]
        if frequencies.get(root, 0):
            continue
        common = next((i for i, (a, b) in enumerate(zip(lower, root, strict=False)) if a != b), None)
        common = min(len(lower), len(root)) if common is None else common
        head, tail, ending = lower[:common], lower[common:], root[common:]
        best = max(
            sorted(_one_typo(head)),
            key=lambda mended: frequencies.get(mended + ending, 0),
            default=None,
        )
        if best is not None and frequencies.get(best + ending, 0):
            guessed[word] = (best + tail, best + ending)
    if not guessed:
        return query
    # the word mended as a whole: of the spellings one typo away that begin like the mended
    # stem (and the stem's own mend), one the index stems to it; a word of the language first,
    # then one as long as the word typed ("turbiness": "turbines", not "turbinness")
    spellings = {
        word: {mended} | {c for c in _one_typo(word.lower()) if c.startswith(root[: len(root) - 1])}
        for word, (mended, root) in guessed.items()
    }
    checked = stem(set().union(*spellings.values()), False)
    fixed = {}
    for word, candidates in spellings.items():
        mended, root = guessed[word]
        right = [c for c in candidates if checked.get(c) == root]
        if right:
            best = min(
                right, key=lambda c: (c not in english_words(), c != mended, abs(len(c) - len(word)), c)
            )
            fixed[word] = best.capitalize() if word[0].isupper() else best
    return _WORD.sub(lambda m: fixed.get(m.group(), m.group()), query) if fixed else query


def _maybe_misspelt(word: str) -> bool:
    return len(word) >= SPELLED_LETTERS and word[1:].islower() and word.lower() not in english_words()


@cache
def english_words() -> frozenset[str]:
    """The English words of six letters or more the package ships (``proxy/data``)."""
    packed = resources.files("proxy.data").joinpath("english_words.txt.gz").read_bytes()
    return frozenset(gzip.decompress(packed).decode("ascii").split())


def _one_typo(word: str) -> set[str]:
    """Every string one typo away from ``word`` (Norvig's ``edits1``), none shorter than 3."""
    letters = string.ascii_lowercase
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    dropped = [a + b[1:] for a, b in splits if b]
    swapped = [a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1]
    replaced = [a + c + b[1:] for a, b in splits if b for c in letters]
    added = [a + c + b for a, b in splits for c in letters]
    return {w for w in (*dropped, *swapped, *replaced, *added) if len(w) >= 3} - {word}
