"""BM25 over some collections of the SQLite index, with those collections' statistics.

FTS5's ``bm25()`` takes the number of rows, their mean length and each term's document count
from the whole table: a search limited to one collection and ranked by it would score otherwise
as soon as another collection gained the query's words, and its scores would tell what that
collection holds. A search limited to collections is scored here with the same formula
(``common.bm25_scores``) over those collections alone: their chunks and tokens
(``collection_totals``, kept by the store), each term's count in each chunk (FTS5's ``instance``
vocabulary; a Chinese pair's, where its two characters stand side by side) and each chunk's
length (FTS5's ``docsize``). Over every collection the scores are ``bm25()``'s to rounding.

The terms are those ``keywords.Vocabulary`` chose: by the whole index's frequencies, since what a
search costs is what FTS5 reads, the whole index's lists of those terms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from proxy.index.store.sqlite.connection import Connection

_SINGLE = "SELECT doc, count(*) FROM temp.ragproxy_instances WHERE term = ? GROUP BY doc"
# the second character's places, materialised once and looked up by SQLite's automatic index
_PAIR = """WITH second AS MATERIALIZED (SELECT doc, offset FROM temp.ragproxy_instances WHERE term = ?)
    SELECT f.doc, count(*) FROM temp.ragproxy_instances f
    JOIN second s ON s.doc = f.doc AND s.offset = f.offset + 1
    WHERE f.term = ? GROUP BY f.doc"""


@dataclass(frozen=True, slots=True)
class ScopedCounts:
    """What BM25 over some collections needs: each term's count in each of their chunks holding
    it (terms in the query's order), those chunks' lengths, and the collections' totals."""

    counts: dict[str, dict[int, int]]
    lengths: dict[int, int]
    chunks: int
    tokens: int


def scoped_counts(
    db: Connection, tokens: Mapping[str, Sequence[str]], collection_ids: Sequence[int]
) -> ScopedCounts:
    """``tokens``: each search term's tokens as the index stores them (a word's stem; a Chinese
    pair's two characters)."""
    marks = ",".join("?" * len(collection_ids))
    chunks, total = db.execute(
        f"SELECT coalesce(sum(chunks), 0), coalesce(sum(tokens), 0) FROM collection_totals "
        f"WHERE collection_id IN ({marks})",
        list(collection_ids),
    ).fetchone()
    _ensure_instances(db)
    everywhere = {term: _term_counts(db, parts) for term, parts in tokens.items()}
    found = {chunk for counts in everywhere.values() for chunk in counts}
    lengths: dict[int, int] = {}
    if found:
        rows = db.execute(
            "SELECT c.id, fts5_tokens(s.sz) FROM chunks c JOIN documents d ON d.id = c.document_id "
            "JOIN chunks_fts_docsize s ON s.id = c.id "
            f"WHERE c.id IN (SELECT value FROM json_each(?)) AND d.collection_id IN ({marks})",
            (json.dumps(sorted(found)), *collection_ids),
        )
        lengths = dict(rows.fetchall())
    counts = {
        term: {chunk: tf for chunk, tf in found_in.items() if chunk in lengths}
        for term, found_in in everywhere.items()
    }
    return ScopedCounts(counts, lengths, int(chunks), int(total))


def _term_counts(db: Connection, parts: Sequence[str]) -> dict[int, int]:
    """A term's count in every chunk of the index holding it: a token's, or two tokens' side by
    side (FTS5's phrase)."""
    if len(parts) == 1:
        rows = db.execute(_SINGLE, (parts[0],))
    elif len(parts) == 2:
        rows = db.execute(_PAIR, (parts[1], parts[0]))
    else:
        raise ValueError(f"a search term is one token or a pair, not {len(parts)}")
    return dict(rows.fetchall())


def _ensure_instances(db: Connection) -> None:
    """This connection's view of chunks_fts's every token instance (a read-only one may make it)."""
    if not db.execute("SELECT 1 FROM temp.sqlite_master WHERE name = 'ragproxy_instances'").fetchone():
        db.execute(
            "CREATE VIRTUAL TABLE temp.ragproxy_instances USING fts5vocab(main, chunks_fts, 'instance')"
        )
