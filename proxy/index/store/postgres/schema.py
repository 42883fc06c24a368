"""The PostgreSQL index's schema, as named migrations applied once each (one replica migrates,
the others wait for it), and the checks a read-only open makes.

Every change to the vectors is logged (a trigger, in the same transaction) and announced
(``NOTIFY ragproxy_vectors``), for the replicas' statistics (``vector_stats``)."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from proxy.errors import ConfigError
from proxy.index import textsearch
from proxy.index.store.common import embedding_text
from proxy.index.store.postgres.keywords import stemmed, stems, tsvector_text
from proxy.text import written_in_cjk

LOCK_SPACE = 0x52505859  # advisory locks (space, collection id): "RPXY"
VECTOR_LOG_LOCK = 0x52505856  # held by a transaction that changes vectors: the log's order is the commits'
CHANNEL = "ragproxy_vectors"


def m001_create_tables(db: psycopg.Connection[Any]) -> None:
    db.execute("CREATE EXTENSION IF NOT EXISTS vector")
    # Martin Porter's original stemmer, as FTS5's ``porter`` (Snowball's ``english`` is Porter2: it
    # stems "RNAs", "highly" otherwise, and cost SciFact keyword recall@10 0.013), without stop
    # words: FTS5 keeps every word too
    db.execute("CREATE TEXT SEARCH DICTIONARY ragproxy_stem (TEMPLATE = snowball, Language = porter)")
    db.execute("CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)")
    db.execute("""CREATE TABLE collections (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        root text NOT NULL)""")
    db.execute("""CREATE TABLE documents (
        id bigserial PRIMARY KEY,
        collection_id bigint NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        path text NOT NULL,
        content_hash text NOT NULL,
        size bigint NOT NULL,
        mtime double precision NOT NULL,
        loader text NOT NULL,
        indexed_at double precision NOT NULL,
        UNIQUE (collection_id, path))""")
    db.execute("""CREATE TABLE chunks (
        id bigserial PRIMARY KEY,
        document_id bigint NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        collection_id bigint NOT NULL,
        ordinal integer NOT NULL,
        text text NOT NULL,
        start integer NOT NULL,
        "end" integer NOT NULL,
        heading text,
        page integer,
        content_hash text NOT NULL,
        embedded boolean NOT NULL DEFAULT false,
        cjk boolean NOT NULL,
        tokens integer NOT NULL,
        keywords tsvector NOT NULL)""")
    db.execute("CREATE INDEX chunks_by_document ON chunks(document_id)")
    db.execute("CREATE INDEX chunks_pending ON chunks(collection_id, id) WHERE NOT embedded")
    db.execute("CREATE INDEX chunks_by_content_hash ON chunks(content_hash)")
    db.execute("CREATE INDEX chunks_keywords ON chunks USING gin(keywords)")
    # BM25 needs the number of chunks and their mean length: kept by triggers, not counted
    db.execute("""CREATE TABLE totals (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        chunks bigint NOT NULL,
        tokens bigint NOT NULL)""")
    db.execute("INSERT INTO totals VALUES (true, 0, 0)")
    db.execute("""CREATE FUNCTION ragproxy_count_chunks() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                UPDATE totals SET chunks = chunks + n, tokens = tokens + t
                FROM (SELECT count(*) AS n, coalesce(sum(tokens), 0) AS t FROM changed) s;
            ELSE
                UPDATE totals SET chunks = chunks - n, tokens = tokens - t
                FROM (SELECT count(*) AS n, coalesce(sum(tokens), 0) AS t FROM changed) s;
            END IF;
            RETURN NULL;
        END $$""")
    db.execute("""CREATE TRIGGER chunks_added AFTER INSERT ON chunks REFERENCING NEW TABLE AS changed
        FOR EACH STATEMENT EXECUTE FUNCTION ragproxy_count_chunks()""")
    db.execute("""CREATE TRIGGER chunks_removed AFTER DELETE ON chunks REFERENCING OLD TABLE AS changed
        FOR EACH STATEMENT EXECUTE FUNCTION ragproxy_count_chunks()""")
    db.execute("""CREATE TABLE embedding_cache (
        model text NOT NULL,
        content_hash text NOT NULL,
        vector bytea NOT NULL,
        PRIMARY KEY (model, content_hash))""")
    db.execute("""CREATE TABLE skipped (
        collection_id bigint NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        path text NOT NULL,
        reason text NOT NULL,
        at double precision NOT NULL,
        PRIMARY KEY (collection_id, path))""")
    # Each vector added (+1) or removed (-1), for the replicas' statistics. The lock taken first
    # makes the log's order the order of commits, so a reader that saw seq N has missed nothing
    # below it.
    db.execute("""CREATE TABLE vector_changes (
        seq bigserial PRIMARY KEY,
        collection_id bigint NOT NULL,
        cjk boolean NOT NULL,
        sign smallint NOT NULL,
        embedding vector NOT NULL,
        at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()))""")
    db.execute(f"""CREATE FUNCTION ragproxy_log_vectors() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock({VECTOR_LOG_LOCK});
            INSERT INTO vector_changes(collection_id, cjk, sign, embedding)
            SELECT collection_id, cjk, CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END, embedding
            FROM changed;
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END $$""")


def m002_collection_totals(db: psycopg.Connection[Any]) -> None:
    """Each collection's chunks and tokens: BM25 over some collections needs their count and mean
    length, not the whole index's. Kept by the same trigger as the index's totals. A replica still
    running the code before it may write chunks meanwhile: they wait, so none is missed."""
    db.execute("LOCK TABLE chunks IN SHARE MODE")
    db.execute("""CREATE TABLE collection_totals (
        collection_id bigint PRIMARY KEY,
        chunks bigint NOT NULL,
        tokens bigint NOT NULL)""")
    db.execute("""INSERT INTO collection_totals
        SELECT collection_id, count(*), coalesce(sum(tokens), 0) FROM chunks GROUP BY collection_id""")
    db.execute("""CREATE OR REPLACE FUNCTION ragproxy_count_chunks() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            sign bigint := CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END;
        BEGIN
            UPDATE totals SET chunks = chunks + sign * n, tokens = tokens + sign * t
            FROM (SELECT count(*) AS n, coalesce(sum(tokens), 0) AS t FROM changed) s;
            INSERT INTO collection_totals AS k
            SELECT collection_id, sign * count(*), sign * coalesce(sum(tokens), 0)
            FROM changed GROUP BY collection_id ORDER BY collection_id
            ON CONFLICT (collection_id) DO UPDATE
            SET chunks = k.chunks + excluded.chunks, tokens = k.tokens + excluded.tokens;
            RETURN NULL;
        END $$""")


def m003_chunk_script(db: psycopg.Connection[Any]) -> None:
    """Each chunk's script told again, by its prose (``written_in_cjk``), not its bytes. A vector
    whose chunk changes script is logged out and in again under its new script, so every
    replica's statistics by script follow."""
    db.execute("LOCK TABLE chunks IN SHARE MODE")
    moved: dict[bool, list[int]] = {False: [], True: []}
    with db.cursor(name="ragproxy_chunk_script") as rows:  # server-side: not every text at once
        rows.execute("SELECT id, text, cjk FROM chunks")
        for row in rows:
            if (cjk := written_in_cjk(row["text"])) != row["cjk"]:
                moved[cjk].append(row["id"])
    for cjk, ids in moved.items():
        if not ids:
            continue
        db.execute("UPDATE chunks SET cjk = %s WHERE id = ANY(%s)", (cjk, ids))
        if has_vectors(db):
            db.execute(
                "CREATE TEMP TABLE moved ON COMMIT DROP AS "
                "SELECT chunk_id, collection_id, embedding FROM chunk_vectors WHERE chunk_id = ANY(%s)",
                (ids,),
            )
            db.execute("DELETE FROM chunk_vectors WHERE chunk_id = ANY(%s)", (ids,))
            db.execute(
                "INSERT INTO chunk_vectors(chunk_id, collection_id, cjk, embedding) "
                "SELECT chunk_id, collection_id, %s, embedding FROM moved",
                (cjk,),
            )
            db.execute("DROP TABLE moved")


def m004_hanzi_folded(db: psycopg.Connection[Any]) -> None:
    """The keyword index holds a Traditional Chinese character as its Simplified one
    (``textsearch.fold``): each chunk with such a character gets its ``tsvector`` again. Its
    token count stays: a character folds to one."""
    db.execute("LOCK TABLE chunks IN SHARE MODE")
    changed: list[int] = []
    with db.cursor(name="ragproxy_hanzi_folded") as rows:  # server-side: not every text at once
        rows.execute("SELECT id, text, heading FROM chunks")
        for row in rows:
            body = embedding_text(row["text"], row["heading"])
            if textsearch.fold(body) != body:
                changed.append(row["id"])
    for start in range(0, len(changed), 1000):
        batch = db.execute(
            "SELECT id, text, heading FROM chunks WHERE id = ANY(%s)", (changed[start : start + 1000],)
        ).fetchall()
        tokens = {row["id"]: textsearch.tokens(embedding_text(row["text"], row["heading"])) for row in batch}
        lexemes = stems(db, sorted({w for found in tokens.values() for w in found if stemmed(w)}))
        with db.cursor() as cursor:
            cursor.executemany(
                "UPDATE chunks SET keywords = %s::tsvector WHERE id = %s",
                [(tsvector_text(found, lexemes), chunk_id) for chunk_id, found in tokens.items()],
            )


MIGRATIONS = [
    ("m001_create_tables", m001_create_tables),
    ("m002_collection_totals", m002_collection_totals),
    ("m003_chunk_script", m003_chunk_script),
    ("m004_hanzi_folded", m004_hanzi_folded),
]


def migrate(db: psycopg.Connection[Any]) -> None:
    """Applies what is missing, in one transaction."""
    with db.transaction():
        # one replica migrates; the others wait here, then find it done
        db.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SPACE,))
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name text PRIMARY KEY, applied_at float8)")
        applied = {row["name"] for row in db.execute("SELECT name FROM _migrations")}
        for name, step in MIGRATIONS:
            if name not in applied:
                step(db)
                db.execute("INSERT INTO _migrations VALUES (%s, %s)", (name, time.time()))


def check_schema(db: psycopg.Connection[Any], where: str) -> None:
    """For a read-only open: the database holds a ragproxy index with every migration applied."""
    with db.transaction():
        found = db.execute("SELECT to_regclass('_migrations') AS t").fetchone()
        if found is None or found["t"] is None:
            raise ConfigError(
                f"the database {where} holds no ragproxy index: build one with 'ragproxy index DIR --db URL'"
            )
        applied = {row["name"] for row in db.execute("SELECT name FROM _migrations")}
    if any(name not in applied for name, _ in MIGRATIONS):
        raise ConfigError(
            f"the index in {where} was made by an older ragproxy: update it with "
            "'ragproxy index DIR' or 'ragproxy serve --docs DIR'"
        )


def has_vectors(db: psycopg.Connection[Any]) -> bool:
    row = db.execute("SELECT to_regclass('chunk_vectors') AS t").fetchone()
    return row is not None and row["t"] is not None


def meta_value(db: psycopg.Connection[Any], key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
    return str(row["value"]) if row else None
