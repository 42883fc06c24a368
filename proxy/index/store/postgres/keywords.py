"""PostgreSQL's keyword search (``KeywordSearch``, a part of ``PostgresStore``), and what it
stores and reads back: a chunk's ``tsvector`` made from the same tokens as the SQLite index's
(each CJK character a token, each adjacent pair a lexeme of its own), and a term's count in a
chunk recovered from ``ts_rank``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import psycopg

from proxy.index import textsearch
from proxy.index.store.common import Hit, bm25_scores, keyword_weights
from proxy.index.store.sql import SqlStore
from proxy.index.store.terms import BUDGET, KeptFrequencies, choose_terms, spelled

MAX_POSITION = 16383  # PostgreSQL's largest tsvector position
MAX_POSITIONS = 256  # ... and positions kept per lexeme
STEMS_KEPT = 200_000


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


def stemmed(token: str) -> bool:
    """An English word, which the ``tsvector`` holds as its stem (other tokens as they are)."""
    return token.isascii() and not token.isdigit()


def stems(db: psycopg.Connection[Any], words: Sequence[str]) -> dict[str, str]:
    """Each word as PostgreSQL's snowball stemmer makes it (itself where it has no stem)."""
    rows = db.execute(
        "SELECT w, ts_lexize('ragproxy_stem', w) AS s FROM unnest(%s::text[]) w", (list(words),)
    )
    return {row["w"]: (row["s"] or [row["w"]])[0] for row in rows}


class KeywordSearch(SqlStore):
    """``PostgresStore``'s keyword search: BM25 as FTS5 computes it, over the rows the GIN index
    finds, and the stems its ``tsvector`` s are made of."""

    _stems: dict[str, str]
    _frequencies: KeptFrequencies

    def _stem(self, words: Iterable[str], *, keep: bool = True) -> dict[str, str]:
        """Each English word as PostgreSQL's snowball stemmer makes it (cached if ``keep``: not a
        spelling's candidates, hundreds a word); other tokens, as they are."""
        wanted = {w for w in words if stemmed(w)}
        missing = [w for w in wanted if w not in self._stems]
        found: dict[str, str] = {}
        if missing:
            found = stems(self.reader(), missing)
            if keep:
                if len(self._stems) > STEMS_KEPT:
                    self._stems.clear()
                self._stems.update(found)
        return {w: found.get(w) or self._stems.get(w, w) for w in wanted}

    def spelled(self, query: str) -> str:
        """The query with each misspelt word put right, by the index's lexemes (``terms.spelled``)."""

        def stem(words: Iterable[str], keep: bool) -> dict[str, str]:
            tokens = {w: query_token(w) for w in words}
            stems = self._stem(tokens.values(), keep=keep)
            return {w: stems.get(t, t) for w, t in tokens.items()}

        return spelled(query, self._document_frequencies(), stem)

    def keyword_terms(self, query: str) -> dict[str, int | None]:
        terms = textsearch.query_terms(query)
        words = {t: query_token(t) for t in terms if " " not in t}
        stems = self._stem(words.values())
        lexemes = {w: stems.get(token, token) for w, token in words.items()}
        return choose_terms(terms, self._document_frequencies(), lexemes, BUDGET)

    def _document_frequencies(self) -> dict[str, int]:
        """Each lexeme's document frequency (``ts_stat``), kept as the SQLite store keeps FTS5's."""
        db = self.reader()

        def read() -> dict[str, int]:
            stats = db.execute("SELECT word, ndoc FROM ts_stat('SELECT keywords FROM chunks')")
            # a pair's lexeme is not looked up (its characters are)
            return {row["word"]: row["ndoc"] for row in stats if not textsearch.is_cjk_pair(row["word"])}

        return self._frequencies.get(self._totals(db)[0], read)

    @staticmethod
    def _totals(db: psycopg.Connection[Any], chosen: Sequence[int] | None = None) -> tuple[int, int]:
        """The chunks and their tokens: of the whole index, or of the ``chosen`` collections."""
        if chosen is None:
            row = db.execute("SELECT chunks, tokens FROM totals").fetchone()
        else:
            row = db.execute(
                "SELECT coalesce(sum(chunks), 0) AS chunks, coalesce(sum(tokens), 0) AS tokens "
                "FROM collection_totals WHERE collection_id = ANY(%s)",
                (list(chosen),),
            ).fetchone()
        return (int(row["chunks"]), int(row["tokens"])) if row else (0, 0)

    def _lexeme(self, term: str) -> str:
        """A search term's lexeme: a word's stem, or a Chinese pair's two characters as one."""
        if " " in term:
            return term.replace(" ", "")
        token = query_token(term)
        return self._stem([token]).get(token, token)

    def search_keyword(
        self,
        query: str,
        k: int = 10,
        collections: Sequence[str] | None = None,
        terms: Mapping[str, int | None] | None = None,
    ) -> list[Hit]:
        """BM25 as FTS5 computes it, over the rows the GIN index finds, with the statistics of
        the whole index, or of ``collections`` if given."""
        terms = self.keyword_terms(query) if terms is None else terms
        chosen = self._collection_ids(collections)
        if not terms or chosen == []:
            return []
        lexemes = {term: textsearch_token(self._lexeme(term)) for term in terms}
        # Each term's count in a chunk, read back from ts_rank of that lexeme alone: with every
        # weight 1 it is sum(1/j², j = 1..count) / (π²/6), one value per count (``_RANK_COUNTS``),
        # and it costs a binary search in the chunk's tsvector, where unnesting it cost 20x more.
        ranks = ", ".join(
            f"ts_rank('{{1,1,1,1}}', c.keywords, %s::tsquery, 0) AS r{i}" for i in range(len(terms))
        )
        db = self.reader()
        with db.transaction():  # the rows and the totals of one snapshot
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = db.execute(
                f"SELECT c.id, c.tokens, {ranks} FROM chunks c WHERE c.keywords @@ %s::tsquery"
                + (" AND c.collection_id = ANY(%s)" if chosen is not None else ""),
                (
                    *(f"'{x}'" for x in lexemes.values()),
                    " | ".join(f"'{x}'" for x in lexemes.values()),
                    *([chosen] if chosen is not None else []),
                ),
            ).fetchall()
            count, tokens = self._totals(db, chosen)
        counts = {
            term: {row["id"]: tf for row in rows if (tf := count_of_rank(row[f"r{i}"]))}
            for i, term in enumerate(lexemes)
        }
        lengths = {row["id"]: row["tokens"] for row in rows}
        scores = bm25_scores(counts, lengths, max(count, len(rows)), tokens)
        best = sorted(scores, key=lambda i: (-scores[i], i))[:k]
        return self._hits({i: scores[i] for i in best})

    def keyword_idf(
        self,
        query: str,
        terms: Mapping[str, int | None] | None = None,
        collections: Sequence[str] | None = None,
    ) -> dict[str, float]:
        terms = self.keyword_terms(query) if terms is None else terms
        chosen = self._collection_ids(collections)
        if not terms or chosen == []:
            return {}
        db = self.reader()
        if chosen is not None:  # every term counted in the collections (the kept frequencies are global)
            terms = dict.fromkeys(terms)

        def phrase_hits(term: str) -> int:
            query = "SELECT count(*) AS n FROM chunks WHERE keywords @@ %s::tsquery" + (
                " AND collection_id = ANY(%s)" if chosen is not None else ""
            )
            lexeme = f"'{textsearch_token(self._lexeme(term))}'"
            row = db.execute(query, (lexeme, *([chosen] if chosen is not None else []))).fetchone()
            return int(row["n"]) if row else 0

        return keyword_weights(terms, self._totals(db, chosen)[0], phrase_hits)
