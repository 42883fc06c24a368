"""The SQLite index's keyword search (``KeywordSearch``, a part of ``SqliteStore``) and its
vocabulary: each token's document frequency, from FTS5's own ``fts5vocab`` tables, for choosing a
question's search terms (``store/terms.py``).

English words are looked up by their stems, made by the index's own tokenizer (a temporary FTS5
table on the reading connection). A pair of Chinese characters matches at most the rows of its
rarer character; FTS5 reads both characters' lists to find it."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from proxy.index import textsearch
from proxy.index.store.common import Hit, bm25_scores, keyword_weights
from proxy.index.store.sql import SqlStore
from proxy.index.store.sqlite.bm25 import ScopedCounts, scoped_counts
from proxy.index.store.sqlite.connection import Connection
from proxy.index.store.terms import BUDGET, KeptFrequencies, choose_terms, spelled
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

    def stems(self, db: Connection, words: Sequence[str], *, keep: bool = True) -> dict[str, str]:
        """Each word as the index's tokenizer stores it (lower case, stemmed). ``keep``: kept
        for the next question (not a spelling's candidates, hundreds a word)."""
        missing = [w for w in dict.fromkeys(words) if w not in self._stems]
        found: dict[str, str] = {}
        if missing:
            _ensure_tables(db)
            db.execute("DELETE FROM temp.ragproxy_words")
            db.executemany("INSERT INTO temp.ragproxy_words(rowid, word) VALUES (?, ?)", enumerate(missing))
            stems = dict(db.execute("SELECT doc, term FROM temp.ragproxy_word_stems").fetchall())
            found = {word: stems.get(i, word.lower()) for i, word in enumerate(missing)}
            if keep:
                with self._lock:
                    if len(self._stems) > STEMS_KEPT:
                        self._stems.clear()
                    self._stems.update(found)
        return {w: found.get(w) or self._stems.get(w, w.lower()) for w in words}

    def spelled(self, db: Connection, query: str) -> str:
        """The query with misspelt words put right (``terms.spelled``)."""
        frequencies = self.frequencies(db)
        return spelled(query, frequencies, lambda words, keep: self.stems(db, list(words), keep=keep))


class KeywordSearch(SqlStore):
    """``SqliteStore``'s keyword search: FTS5's BM25 over the whole index, or BM25 over some
    collections with their own statistics (``bm25``)."""

    _vocabulary: Vocabulary

    def keyword_terms(self, query: str) -> dict[str, int | None]:
        """The query's search terms the keyword search runs (the rarer ones, when matching them
        all would score too many rows: ``keywords``), with the document frequency of each single
        token."""
        return self._vocabulary.select(self.reader(), query)

    def spelled(self, query: str) -> str:
        """The query with each misspelt word put right, by the index's vocabulary."""
        return self._vocabulary.spelled(self.reader(), query)

    def search_keyword(
        self,
        query: str,
        k: int = 10,
        collections: Sequence[str] | None = None,
        terms: Mapping[str, int | None] | None = None,
    ) -> list[Hit]:
        """BM25 over chunk text (English stemmed, Chinese by adjacent characters): FTS5's over the
        whole index, or over ``collections`` with their own statistics (``bm25``).
        ``terms``: ``keyword_terms(query)``, if the caller has them already."""
        terms = self.keyword_terms(query) if terms is None else terms
        chosen = self._collection_ids(collections)
        if not terms or chosen == []:
            return []
        db = self.reader()
        if chosen is not None:
            found = self._scoped_counts(list(terms), chosen)
            scored = bm25_scores(found.counts, found.lengths, found.chunks, found.tokens)
            best = sorted(scored, key=lambda i: (-scored[i], i))[:k]
            scores = {i: scored[i] for i in best}
        else:
            # Ranked in FTS5 first, the k rows read after: joining every matching row before the
            # sort doubled the time.
            ranked = db.execute(
                "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? "
                "ORDER BY bm25(chunks_fts) LIMIT ?",
                (" OR ".join(textsearch.quote(t) for t in terms), k),
            ).fetchall()
            scores = {row[0]: row[1] for row in ranked}
        return self._hits(scores)

    def keyword_idf(
        self,
        query: str,
        terms: Mapping[str, int | None] | None = None,
        collections: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """Each term the keyword search runs for ``query`` (``terms``, if the caller has them),
        with its inverse document frequency as BM25 computes it, over the whole index or over
        ``collections``: what a match on that term is worth."""
        db = self.reader()
        terms = self.keyword_terms(query) if terms is None else terms
        chosen = self._collection_ids(collections)
        if chosen == [] or not terms:
            return {}
        if chosen is not None:
            found = self._scoped_counts(list(terms), chosen)
            hits = {term: len(found.counts[term]) for term in terms}
            return keyword_weights(hits, found.chunks, lambda term: hits[term])
        total = db.execute("SELECT count(*) FROM chunks").fetchone()[0]

        def phrase_hits(term: str) -> int:
            query = "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?"
            return int(db.execute(query, (textsearch.quote(term),)).fetchone()[0])

        return keyword_weights(terms, total, phrase_hits)

    def _scoped_counts(self, terms: Sequence[str], collection_ids: Sequence[int]) -> ScopedCounts:
        """``bm25.scoped_counts`` in one snapshot, kept for the next call of this thread
        while the file is unchanged (a search and its terms' weights ask alike)."""
        db = self.reader()
        db.execute("BEGIN")
        try:
            key = (
                tuple(terms),
                tuple(sorted(collection_ids)),
                db.execute("PRAGMA data_version").fetchone()[0],
            )
            kept = getattr(self._local, "scoped", None)
            if kept is not None and kept[0] == key:
                found: ScopedCounts = kept[1]
                return found
            stems = self._vocabulary.stems(db, [t for t in terms if " " not in t])
            tokens = {t: t.split(" ") if " " in t else [stems[t]] for t in terms}
            found = scoped_counts(db, tokens, collection_ids)
            self._local.scoped = (key, found)
            return found
        finally:
            db.execute("COMMIT")


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
