"""The relevance gate's statistics on a PostgreSQL index: each replica's sums over the vectors
(the moments of its vectors, per collection and script), read once, then kept current from the
vector log that every change to the vectors writes (``schema``), as the listener
(``listener``) hears of each change."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import psycopg

from proxy.index.store.postgres.listener import ChangeListener
from proxy.index.store.postgres.schema import has_vectors, meta_value
from proxy.index.vectors import Background, Moments, by_script, codes_of

LOG_KEPT_SECONDS = 60  # vector changes kept for replicas to read; one further behind reloads
LOAD_BATCH = 4096


class VectorStats:
    """This replica's sums over the vectors (count, Σv, Σvvᵀ per collection and script) that the
    relevance gate's background is computed from. Read once, then kept current from the vector
    log: the listener wakes at each ``NOTIFY`` and reads the new entries. ``connect``: a new
    connection to the index's database (``autocommit``, by default); ``reader``: this thread's
    reading connection."""

    def __init__(
        self,
        connect: Callable[..., psycopg.Connection[Any]],
        reader: Callable[[], psycopg.Connection[Any]],
    ) -> None:
        self._connect = connect
        self._reader = reader
        self._lock = threading.Lock()
        self._moments: dict[tuple[int, bool], Moments] | None = None
        self._epoch = ""
        self._seq = 0
        self._listener = ChangeListener(connect, lambda: self.current(follow=True))

    def stop(self) -> None:
        self._listener.stop()

    def background(self, q: np.ndarray, chosen: set[int] | None, cjk: bool | None) -> Background | None:
        """``vectors.by_script``: the query's background, by_script, with the other script's if both hold
        enough chunks."""
        moments = self.current()
        with self._lock:
            return by_script(moments, q, chosen, cjk) if moments else None

    def current(self, *, follow: bool = False) -> dict[tuple[int, bool], Moments]:
        """The sums, read if they never were. ``follow``: brought up to date with the log first
        (the listening thread does it at each notification, so a search need not ask)."""
        with self._lock:
            if self._moments is None:
                self._load()
                follow = True
            if follow or not self._listener.alive():
                self._follow()
            assert self._moments is not None
            return self._moments

    def _load(self) -> None:
        """Every vector, read in one snapshot with the log position it is current to."""
        db = self._connect(autocommit=False)
        try:
            with db.transaction():
                db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                self._epoch = meta_value(db, "vectors_epoch") or ""
                row = db.execute("SELECT coalesce(max(seq), 0) AS seq FROM vector_changes").fetchone()
                self._seq = int(row["seq"]) if row else 0
                moments: dict[tuple[int, bool], Moments] = {}
                dim_text = meta_value(db, "dim")
                if dim_text and has_vectors(db):
                    dim = int(dim_text)
                    with db.cursor(name="ragproxy_vectors_load", binary=True) as cursor:
                        cursor.itersize = LOAD_BATCH
                        cursor.execute("SELECT collection_id, cjk, embedding FROM chunk_vectors")
                        while batch := cursor.fetchmany(LOAD_BATCH):
                            _add_rows(moments, dim, batch, +1)
                self._moments = moments
        finally:
            db.close()

    def _follow(self) -> None:
        """Applies the log's entries past the last one seen (a reload if the embedder changed,
        or if entries were dropped before this replica read them)."""
        db = self._reader()
        epoch = meta_value(db, "vectors_epoch") or ""
        oldest = db.execute("SELECT min(seq) AS seq FROM vector_changes").fetchone()
        if epoch != self._epoch or (oldest and oldest["seq"] is not None and oldest["seq"] > self._seq + 1):
            self._load()
            return
        dim_text = meta_value(db, "dim")
        if not dim_text:
            return
        with db.cursor(binary=True) as cursor:
            cursor.execute(
                "SELECT seq, collection_id, cjk, sign, embedding FROM vector_changes "
                "WHERE seq > %s ORDER BY seq",
                (self._seq,),
            )
            rows = cursor.fetchall()
        assert self._moments is not None
        for sign in (+1, -1):
            _add_rows(self._moments, int(dim_text), [r for r in rows if r["sign"] == sign], sign)
        if rows:
            self._seq = int(rows[-1]["seq"])
        self._listener.start()


def prune_log(db: psycopg.Connection[Any]) -> None:
    """Drops the vector log's entries older than replicas need (they follow within milliseconds;
    one that was away longer reloads). The newest entry stays: a replica finding the oldest one
    past what it read knows it missed some."""
    db.execute(
        "DELETE FROM vector_changes WHERE at < extract(epoch FROM clock_timestamp()) - %s "
        "AND seq < (SELECT max(seq) FROM vector_changes)",
        (LOG_KEPT_SECONDS,),
    )


def _add_rows(
    moments: dict[tuple[int, bool], Moments], dim: int, rows: Sequence[Mapping[str, Any]], sign: int
) -> None:
    """Adds (or takes away) vectors in pgvector's binary form to the groups' sums."""
    if not rows:
        return
    vectors = np.stack([np.frombuffer(bytes(r["embedding"]), dtype=">f4", offset=4) for r in rows])
    codes = codes_of(vectors.astype(np.float32))
    keys = [(int(r["collection_id"]), bool(r["cjk"])) for r in rows]
    for key in set(keys):
        group = np.array([k == key for k in keys])
        moments.setdefault(key, Moments(dim)).change(codes[group], sign)
        if moments[key].count <= 0:
            del moments[key]
