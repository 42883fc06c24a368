"""The SQLite index's keyword vocabulary: each token's document frequency, from FTS5's own
``fts5vocab`` tables, for choosing a question's search terms (``store/terms.py``).

English words are looked up by their stems, made by the index's own tokenizer (a temporary FTS5
table on the reading connection). A pair of Chinese characters matches at most the rows of its
rarer character; FTS5 reads both characters' lists to find it."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from proxy.index.store.sqlite.connection import Connection
from proxy.index.store.terms import BUDGET, KeptFrequencies, choose_terms
from proxy.index.textsearch import query_terms

STEMS_KEPT = 50_000
TOKENIZER = "porter unicode61 remove_diacritics 2"  # as chunks_fts


class Vocabulary:
    """Document frequencies of the index's tokens. Reading them all takes ~0.3 s at 100k chunks,
    so they are kept, and read again when the number of chunks (a cheap count) has changed: after
    ``REFRESH_SECONDS``, or within 5 s when it changed by more than ``GROWTH`` (a folder being
    indexed). A token added since counts as rare, which keeps it."""

    def __init__(self, budget: int = BUDGET) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._kept = KeptFrequencies()
        self._stems: dict[str, str] = {}

    def select(self, db: Connection, query: str) -> dict[str, int | None]:
        """The query's search terms (``textsearch.query_terms``) that the keyword search runs,
        each with its document frequency if it is one token (a Chinese pair's is not known)."""
        terms = query_terms(query)
        frequencies = self.frequencies(db)
        stems = self.stems(db, [t for t in terms if " " not in t])
        return choose_terms(terms, frequencies, stems, self.budget)

    def frequencies(self, db: Connection) -> dict[str, int]:
        """Each token's document frequency, read again if the index's size has changed."""

        def read() -> dict[str, int]:
            _ensure_tables(db)
            return dict(db.execute("SELECT term, doc FROM temp.ragproxy_vocabulary").fetchall())

        return self._kept.get(db.execute("SELECT count(*) FROM chunks").fetchone()[0], read)

    def stems(self, db: Connection, words: Sequence[str]) -> dict[str, str]:
        """Each word as the index's tokenizer stores it (lower case, stemmed)."""
        missing = [w for w in dict.fromkeys(words) if w not in self._stems]
        if missing:
            _ensure_tables(db)
            db.execute("DELETE FROM temp.ragproxy_words")
            db.executemany("INSERT INTO temp.ragproxy_words(rowid, word) VALUES (?, ?)", enumerate(missing))
            found = dict(db.execute("SELECT doc, term FROM temp.ragproxy_word_stems").fetchall())
            with self._lock:
                if len(self._stems) > STEMS_KEPT:
                    self._stems.clear()
                self._stems.update((word, found.get(i, word.lower())) for i, word in enumerate(missing))
        return {w: self._stems.get(w, w.lower()) for w in words}


def _ensure_tables(db: Connection) -> None:
    """Temporary tables of this connection (a read-only one may have them): the vocabulary of
    chunks_fts, and a scratch FTS5 table whose own vocabulary gives a word's stem."""
    if db.execute("SELECT 1 FROM temp.sqlite_master WHERE name = 'ragproxy_vocabulary'").fetchone():
        return
    db.execute("CREATE VIRTUAL TABLE temp.ragproxy_vocabulary USING fts5vocab(main, chunks_fts, 'row')")
    db.execute(f"CREATE VIRTUAL TABLE temp.ragproxy_words USING fts5(word, tokenize='{TOKENIZER}')")
    db.execute(
        "CREATE VIRTUAL TABLE temp.ragproxy_word_stems USING fts5vocab(temp, ragproxy_words, 'instance')"
    )
