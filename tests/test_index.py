"""The index on real files, the real embedded embedder, and both stores: a real SQLite file and a
real PostgreSQL server with pgvector."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.index.chunker import chunk_document, join_chunks
from proxy.index.names import file_name
from proxy.index.service import IndexService
from proxy.index.store import Hit
from proxy.index.store.sqlite import connect
from proxy.settings import Settings
from proxy.types import Document
from tests.docs import write_folder, write_pdf
from tests.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The index's database setting: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "index.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def service(database: str) -> Iterator[IndexService]:
    svc = IndexService(Settings(db=database, max_file_size=100_000))
    yield svc
    svc.close()


def paths(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [hit.path for hit in hits]


def indexed(service: IndexService, root: Path, name: str = "docs") -> None:
    collection = service.indexer.add_collection(name, root)
    assert service.store.claim_collection(collection.id)  # this process indexes it
    service.indexer.scan(collection)
    service.worker.embed_pending()


def test_every_loader_and_both_searches(service: IndexService, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write_folder(root)
    indexed(service, root)
    search = service.store.search_keyword
    assert paths(search("Fresnel lens"))[0] == "handbook.md"
    hit = search("foghorn")[0]
    assert hit.heading == "Lighthouse Handbook > Storms" and "foghorn" in hit.text
    assert hit.text == (root / "handbook.md").read_text()[hit.start : hit.end].strip()
    html = search("radio operator")[0]
    assert html.path == "station.html" and html.heading == "Radio Room"
    assert search("SCRIPTCANARY") == [] and search("secret") == []
    pdf = search("winch")[0]
    assert (pdf.path, pdf.page) == ("manual.pdf", 2)
    assert search("anchors")[0].page == 1
    docx = search("compost heap")[0]
    assert (docx.path, docx.heading) == ("garden.docx", "Garden Manual > Compost")
    assert paths(search("熊猫吃什么"))[0] == "panda.md"
    assert paths(search("四川"))[0] == "panda.md"

    vector = service.store.search_vector
    embed = service.embedder.embed_query
    assert paths(vector(embed("大熊猫的食物是什么？"), 3))[0] == "panda.md"
    assert paths(vector(embed("what does the keeper clean on Tuesdays"), 3))[0] == "handbook.md"
    assert paths(service.search("where are the spare batteries", 3))[0] == "station.html"
    status = service.store.status()["collections"][0]
    assert status["documents"] == 6 and status["pending_vectors"] == 0 and status["skipped"] == []


def test_bad_files_are_skipped_with_reasons(service: IndexService, tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "good.md").write_text("# Good\n\nThe good file mentions zeppelins.\n")
    (root / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00")
    noise = random.Random(7)
    (root / "noise.txt").write_bytes(bytes(noise.randrange(1, 256) for _ in range(4096)))  # no NUL
    (root / "empty.md").write_text("")
    (root / "huge.txt").write_text("word " * 50_000)
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<\ngarbage")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a signature, no image
    (root / "data.xyz").write_bytes(b"\x01\x02")
    indexed(service, root)
    skipped = {s["path"]: s["reason"] for s in service.store.status()["collections"][0]["skipped"]}
    assert skipped == {
        "blob.txt": "binary file",
        "noise.txt": skipped["noise.txt"],
        "empty.md": "empty file",
        "huge.txt": "250000 bytes, over the 100000-byte cap",
        "broken.pdf": skipped["broken.pdf"],
        "image.png": skipped["image.png"],
        "data.xyz": "no loader for .xyz",
    }
    assert skipped["broken.pdf"].startswith("unreadable PDF")
    assert skipped["image.png"].startswith("unreadable image")
    assert re.fullmatch(
        r"binary file: not UTF-8 \(byte \d+\), and no other encoding fits", skipped["noise.txt"]
    )
    assert paths(service.store.search_keyword("zeppelins")) == ["good.md"]


LEGACY = {
    "gbk.txt": ("gbk", "大熊猫主要以竹子为食，每天要吃十几公斤竹子。它们生活在四川的山区森林中。\n"),
    "big5.md": ("big5", "# 高山茶\n\n臺灣的高山茶生長在海拔一千公尺以上的山區，氣候涼爽，雲霧繚繞。\n"),
    "gb18030.txt": ("gb18030", "数据库备份应当每天执行一次，并保存在另一台服务器上。𠀀\n"),
    "cp1252.html": ("cp1252", "<p>The café serves crème brûlée, “fancy” quotes — and a naïve façade.</p>\n"),
    "utf16.txt": ("utf-16", "Notepad saved this note about lighthouses in UTF-16.\n"),
    "bom.txt": ("utf-8-sig", "A UTF-8 file with a BOM mentions hovercraft.\n"),
}


def test_legacy_encodings_are_detected_and_indexed(service: IndexService, tmp_path: Path) -> None:
    root = tmp_path / "legacy"
    root.mkdir()
    for name, (encoding, text) in LEGACY.items():
        (root / name).write_bytes(text.encode(encoding))
    indexed(service, root)
    assert service.store.status()["collections"][0]["skipped"] == []
    search = service.store.search_keyword
    gbk = search("竹子")[0]
    assert gbk.path == "gbk.txt" and gbk.text == LEGACY["gbk.txt"][1].strip()
    assert paths(search("四川")) == ["gbk.txt"]
    assert paths(service.search("大熊猫吃什么", 1)) == ["gbk.txt"]
    assert search("高山茶")[0].text.endswith(LEGACY["big5.md"][1].split("\n\n")[1].strip())
    assert search("数据库")[0].text == LEGACY["gb18030.txt"][1].strip()
    cafe = search("brûlée")[0]
    assert (cafe.path, cafe.text) == (
        "cp1252.html",
        "The café serves crème brûlée, “fancy” quotes — and a naïve façade.",
    )
    assert paths(search("lighthouses")) == ["utf16.txt"]
    assert search("hovercraft")[0].text.startswith("A UTF-8 file")  # the BOM is not part of the text


POSTGRES_TABLES = {"chunks_vec": "chunk_vectors", "chunks_fts_docsize": "chunks"}  # keywords live in chunks


def count(service: IndexService, table: str) -> int:
    if service.settings.db_url:
        table = POSTGRES_TABLES.get(table, table)
    row = service.store.reader().execute(f"SELECT COUNT(*) AS n FROM {table}").fetchone()  # type: ignore[attr-defined]
    return int(row["n"])


def test_changes_deletes_and_unchanged_files(service: IndexService, tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    note = root / "note.md"
    note.write_text("# Note\n\nThe first version talks about kayaks.\n")
    indexed(service, root, "d")
    collection = service.indexer.collections["d"]
    assert service.indexer.index_file(collection, note) == "unchanged"
    os.utime(note, (1, 1))  # mtime changed, content not: hashed, found equal, not rewritten
    assert service.indexer.index_file(collection, note) == "unchanged"
    note.write_text("# Note\n\nThe second version talks about canoes.\n")
    assert service.indexer.index_file(collection, note) == "indexed"
    assert service.store.search_keyword("kayaks") == []
    assert paths(service.store.search_keyword("canoes")) == ["note.md"]
    service.worker.embed_pending()
    assert count(service, "chunks") == count(service, "chunks_vec") == 1
    assert count(service, "embedding_cache") == 2  # kayaks and canoes
    service.indexer.scan(collection)
    assert count(service, "embedding_cache") == 1  # only the text that still exists
    note.unlink()
    assert service.indexer.index_file(collection, note) == "deleted"
    for table in ("documents", "chunks", "chunks_vec", "chunks_fts_docsize"):
        assert count(service, table) == 0, table


def test_rename_keeps_vectors_and_directory_moves_follow(service: IndexService, tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.md").write_text("Alpha document about glaciers.\n")
    (root / "sub" / "b.md").write_text("Beta document about volcanoes.\n")
    indexed(service, root, "r")
    collection = service.indexer.collections["r"]
    vectors_before = count(service, "chunks_vec")
    (root / "sub").rename(root / "moved")
    service.indexer.move_path(collection, root / "sub", root / "moved")
    assert sorted(paths(service.store.search_keyword("glaciers OR volcanoes"))) == [
        "moved/a.md",
        "moved/b.md",
    ]
    assert service.store.pending_chunks(10) == [] and count(service, "chunks_vec") == vectors_before


def write_named(folder: Path, name: bytes, text: str) -> None:
    """A file whose name is these bytes (not UTF-8, as unpacked from a Windows zip)."""
    with open(os.path.join(os.fsencode(folder), name), "wb") as file:
        file.write(text.encode())


def test_file_names_that_are_not_utf8(service: IndexService, tmp_path: Path) -> None:
    root = tmp_path / "zip"
    (root / "sub").mkdir(parents=True)
    write_named(root, b"\xb2\xe2\xca\xd4.txt", "The GBK-named note mentions ocelots.\n")  # 测试 in GBK
    write_named(root, b"caf\xe9.md", "The cp1252-named note mentions tapirs.\n")
    write_named(root, rb"caf\xe9.md", "A name with a real backslash mentions okapis.\n")  # valid UTF-8
    write_named(root, b"sub/r\xe9sum\xe9.md", "The folder's note mentions quolls.\n")
    write_named(root, b"\xff.xyz", "No loader reads this.\n")
    indexed(service, root)
    collection = service.indexer.collections["docs"]
    search = service.store.search_keyword
    assert paths(search("ocelots")) == ["\\xb2\\xe2\\xca\\xd4.txt"]  # the bytes shown escaped
    assert paths(search("tapirs")) == ["caf\\xe9.md"]
    assert paths(search("okapis")) == ["caf\\x5cxe9.md"]  # its backslash escaped: no clash
    for hit in search("ocelots OR tapirs OR okapis OR quolls"):  # each path leads back to its file
        assert hit.text in (root / file_name(hit.path)).read_text()
    status = service.store.status()["collections"][0]
    assert status["documents"] == 4
    assert status["skipped"] == [{"path": "\\xff.xyz", "reason": "no loader for .xyz"}]

    write_named(root, b"caf\xe9.md", "The cp1252-named note now mentions tapirs and llamas.\n")
    os.rename(os.path.join(os.fsencode(root), b"sub"), os.path.join(os.fsencode(root), b"d\xe9p"))
    service.indexer.move_path(collection, root / "sub", root / os.fsdecode(b"d\xe9p"))
    assert paths(search("quolls")) == ["d\\xe9p/r\\xe9sum\\xe9.md"]
    os.unlink(os.path.join(os.fsencode(root), b"\xb2\xe2\xca\xd4.txt"))
    report = service.indexer.scan(collection)
    assert (report.indexed, report.deleted) == (1, 1)
    assert search("ocelots") == [] and paths(search("llamas")) == ["caf\\xe9.md"]
    assert service.store.status()["collections"][0]["documents"] == 3


def test_symlinks_out_of_the_root_are_not_followed(service: IndexService, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("The outside secret is OUTSIDECANARY.\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "inside.md").write_text("Inside text.\n")
    (root / "link.md").symlink_to(outside / "secret.md")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    sibling = tmp_path / "root2"  # shares the prefix "root"
    sibling.mkdir()
    (sibling / "x.md").write_text("SIBLINGCANARY\n")
    indexed(service, root, "root")
    assert service.store.search_keyword("OUTSIDECANARY") == []
    assert service.store.search_keyword("SIBLINGCANARY") == []
    assert service.indexer.collections["root"].relative(sibling / "x.md") is None


def test_gitignore_and_editor_files(service: IndexService, tmp_path: Path) -> None:
    root = tmp_path / "g"
    (root / ".git").mkdir(parents=True)
    (root / "node_modules" / "x").mkdir(parents=True)
    (root / "build").mkdir()
    (root / ".gitignore").write_text("build/\n*.log\n")
    for name in (
        ".git/HEAD.md",
        "node_modules/x/readme.md",
        "build/out.md",
        "debug.log",
        "note.md~",
        ".note.md.swp",
        ".#note.md",
        "~$note.md",  # an Office owner file
        "kept.md",
    ):
        (root / name).write_text("IGNORECANARY text\n")
    indexed(service, root)
    assert paths(service.store.search_keyword("IGNORECANARY")) == ["kept.md"]


def test_nested_gitignore_files(service: IndexService, tmp_path: Path) -> None:
    root = tmp_path / "n"
    (root / "app" / "logs").mkdir(parents=True)
    (root / ".gitignore").write_text("*.log\n")
    (root / "app" / ".gitignore").write_text("secret.md\n!keep.log\nlogs/\n")
    for name in ("top.log", "app/keep.log", "app/secret.md", "app/open.md", "app/logs/x.md", "secret.md"):
        (root / name).write_text("NESTEDCANARY\n")
    indexed(service, root, "n")
    assert sorted(paths(service.store.search_keyword("NESTEDCANARY"))) == [
        "app/keep.log",
        "app/open.md",
        "secret.md",
    ]


def test_a_different_embedder_reembeds_or_refuses(tmp_path: Path, database: str) -> None:
    class Tiny:
        name, dim, max_tokens = "tiny", 3, 512

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[1.0, float(len(t)), 0.5] for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return [1.0, float(len(text)), 0.5]

    root = tmp_path / "e"
    root.mkdir()
    (root / "a.md").write_text("Some text.\n")
    db = database
    first = IndexService(Settings(db=db))
    indexed(first, root)
    first.close()
    searching = IndexService(Settings(db=db), embedder=Tiny())
    with pytest.raises(ConfigError, match="search with the embedder it was built with"):
        searching.search("text")
    assert searching.store.embedder()[0] != "tiny" and count(searching, "chunks_vec") == 1  # nothing dropped
    searching.close()
    refusing = IndexService(Settings(db=db, on_embedder_change="refuse"), embedder=Tiny())
    with pytest.raises(ConfigError, match="would mix them"):
        refusing.worker  # noqa: B018
    refusing.close()
    switching = IndexService(Settings(db=db), embedder=Tiny())
    assert switching.store.status()["embedder"] != "tiny"
    assert switching.worker.embed_pending() == 1
    assert switching.store.status()["embedder"] == "tiny" and switching.store.status()["dim"] == 3
    switching.close()


def test_pdf_writer_makes_a_pdf_pypdf_reads(tmp_path: Path) -> None:
    import pypdf

    write_pdf(tmp_path / "x.pdf", ["hello", "world"])
    assert [p.extract_text() for p in pypdf.PdfReader(tmp_path / "x.pdf").pages] == ["hello", "world"]


def test_store_opens_read_only_copy(tmp_path: Path) -> None:
    db = connect(tmp_path / "x.db")
    db.execute("CREATE TABLE t (x)")
    db.close()
    assert (
        connect(tmp_path / "x.db", readonly=True)
        .execute("SELECT vec_version()")
        .fetchone()[0]
        .startswith("v")
    )


def test_vector_scores_are_cosine_similarities(tmp_path: Path) -> None:
    import math

    from proxy.index.store import SqliteStore, pack
    from proxy.types import Chunk

    store = SqliteStore(tmp_path / "v.db")
    store.bind_embedder("toy", 3)
    collection = store.collection_id("c", str(tmp_path))
    vectors = {"a": [3.0, 0.0, 0.0], "b": [1.0, 1.0, 0.0], "c": [0.0, 0.0, 2.0]}
    for name in vectors:
        store.replace_document(
            collection,
            name,
            digest=name,
            size=1,
            mtime=1,
            loader="t",
            chunks=[Chunk(0, f"text {name}", 0, 6)],
        )
    pending = store.pending_chunks(10)
    by_path = dict(zip(vectors, pending, strict=True))
    store.store_vectors("toy", [(by_path[n], pack(v)) for n, v in vectors.items()])
    query = [2.0, 1.0, 0.0]
    hits = store.search_vector(query, 3)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)

    assert [h.path for h in hits] == ["b", "a", "c"]
    for hit in hits:  # vectors are held in 16 bits a component
        assert math.isclose(hit.score, cosine(query, vectors[hit.path]), abs_tol=5e-5)
    assert store.search_vector(query, 3, collections=["other"]) == []
    store.close()


def test_migrations_keep_data(tmp_path: Path) -> None:
    from proxy.index.store.sqlite.migrations import m001_create_tables, migrate

    db = connect(tmp_path / "old.db")
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    m001_create_tables(db)
    db.execute("INSERT INTO _migrations VALUES ('m001_create_tables', 0)")
    db.execute("INSERT INTO embedding_cache VALUES ('e5', 'abc', x'00000000')")
    assert migrate(db) == [
        "m002_embedding_cache_rowid",
        "m003_chunks_by_content_hash",
        "m004_collection_totals",
        "m005_chunk_script",
        "m006_hanzi_folded",
    ]
    assert [tuple(r) for r in db.execute("SELECT model, content_hash, vector FROM embedding_cache")] == [
        ("e5", "abc", b"\x00\x00\x00\x00")
    ]
    assert (
        "WITHOUT ROWID"
        not in db.execute("SELECT sql FROM sqlite_master WHERE name = 'embedding_cache'").fetchone()[0]
    )
    assert migrate(db) == []
    db.close()


def test_vector_matrix_is_exact_and_follows_changes() -> None:
    import numpy as np

    from proxy.index.store.sqlite.matrix import VectorMatrix

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    matrix = VectorMatrix(16)
    for i, v in enumerate(vectors):
        matrix.add(i + 1, i % 3, v.tobytes())
    removed = set(range(1, 3001, 7))
    matrix.remove(removed)
    keep = np.array([i + 1 not in removed for i in range(3000)])
    for q in rng.standard_normal((20, 16)).astype(np.float32):
        scores = vectors @ (q / np.linalg.norm(q))
        scores[~keep] = -np.inf
        expected = [int(i) + 1 for i in np.argsort(-scores)[:10]]
        assert [cid for cid, _ in matrix.search(q.tolist(), 10, None)] == expected
        in_one = np.where(np.arange(3000) % 3 == 1, scores, -np.inf)
        assert [cid for cid, _ in matrix.search(q.tolist(), 5, [1])] == [
            int(i) + 1 for i in np.argsort(-in_one)[:5]
        ]


def test_vectors_written_by_another_process_are_seen(tmp_path: Path) -> None:
    from proxy.index.store import SqliteStore, pack
    from proxy.types import Chunk

    path = tmp_path / "shared.db"
    reader, writer = (
        SqliteStore(path),
        SqliteStore(path),
    )  # two stores on one file, as serve and `ragproxy index`
    writer.bind_embedder("toy", 2)
    collection = writer.collection_id("c", str(tmp_path))

    def add(name: str, vector: list[float]) -> None:
        writer.replace_document(
            collection, name, digest=name, size=1, mtime=1, loader="t", chunks=[Chunk(0, name, 0, 1)]
        )
        (pending,) = writer.pending_chunks(5)
        writer.store_vectors("toy", [(pending, pack(vector))])

    add("east", [1.0, 0.0])
    assert [h.path for h in reader.search_vector([1.0, 0.1], 5)] == ["east"]
    add("north", [0.0, 1.0])
    assert [h.path for h in reader.search_vector([0.1, 1.0], 5)] == ["north", "east"]
    writer.delete_documents(collection, ["north"])
    assert [h.path for h in reader.search_vector([0.1, 1.0], 5)] == ["east"]
    reader.close()
    writer.close()


def test_a_document_is_rebuilt_from_its_overlapping_chunks(tmp_path: Path) -> None:
    sentence = "The {n}th valve of the Zephyr line is checked every {n}00 hours, and logged."
    paragraphs = [" ".join(sentence.format(n=p * 10 + s) for s in range(30)) for p in range(4)]
    text = "# Valves\n\n" + "\n\n".join(paragraphs) + "\n"
    chunks = chunk_document(Document(text), 256, 32)
    assert len(chunks) > 3 and any(b.start < a.end for a, b in zip(chunks, chunks[1:], strict=False))
    assert join_chunks(chunks) == text.strip()
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "valves.md").write_text(text)
    service = IndexService(Settings(db=str(tmp_path / "index.db")))
    try:
        service.indexer.scan(service.indexer.add_collection("notes", folder))
        assert service.document_text("notes", "valves.md") == text.strip()
        assert service.document_text("notes", "missing.md") is None
        stored = service.store.document_chunks("notes", "valves.md")
        assert stored is not None and [c.ordinal for c in stored] == list(range(len(chunks)))
        assert service.store.chunk(stored[1].chunk_id) == stored[1]
        assert service.store.chunk(stored[1].chunk_id, ["notes"]) == stored[1]
        assert service.store.chunk(stored[1].chunk_id, ["other"]) is None  # filtered in the SQL
    finally:
        service.close()


def test_a_search_of_one_collection_scores_alike_whatever_another_holds(
    service: IndexService, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "keeper.md").write_text("The lighthouse keeper trims the lamp.\n")
    (a / "lamp.md").write_text("A lamp, a lamp, a lighthouse lamp burns all night.\n")
    (a / "log.md").write_text("The keeper writes the storm in the log. 灯塔看守人\n")
    for i in range(12):  # so that the three words are rare in the collection
        (a / f"other{i}.md").write_text(f"Note {i} is about the tides and the gulls.\n")
    indexed(service, a, "a")
    indexed(service, b, "b")
    queries = ["lighthouse keeper lamp", "灯塔看守"]

    def scores() -> list[object]:
        found: list[object] = []
        for query in queries:
            hits = service.store.search_keyword(query, 10, ["a"])
            found.append([(hit.path, round(hit.score, 9)) for hit in hits])
            found.append(service.store.keyword_idf(query, None, ["a"]))  # what the gate weighs
            ranking = service.rank(query, 10, ["a"], "keyword")
            found.append(sorted((i, round(s, 9)) for i, s in ranking.strength.items()))  # A's chunks stay
        return found

    before = scores()
    for i in range(200):
        (b / f"b{i}.md").write_text(f"Lighthouse {i} has a keeper; its lamp is number {i}. 灯塔看守\n")
    service.indexer.scan(service.indexer.collections["b"])
    assert service.store.keyword_idf(queries[0]) != before[1]  # the whole index's weights did change
    assert scores() == before
    (b / "b0.md").unlink()  # and deletes, too
    service.indexer.scan(service.indexer.collections["b"])
    assert scores() == before


def scored(hits: list[Hit]) -> list[tuple[float, str, str]]:
    return sorted((round(h.score, 9), h.path, h.text) for h in hits)


def test_a_search_of_every_collection_scores_as_the_whole_index(
    service: IndexService, database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    for name, words in (("a", "lighthouse keeper lamp storm"), ("b", "keeper lamp tide gull 灯塔看守")):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(15):
            picked = " ".join(random.Random(i).choices(words.split(), k=3 + i % 5))
            (folder / f"{i}.md").write_text(f"Entry {i}: {picked}.\n")
        indexed(service, folder, name)
    queries = ("lighthouse keeper lamp", "lamp", "灯塔看守", "storm gull")
    for query in queries:
        whole = service.store.search_keyword(query, 30)
        every = service.store.search_keyword(query, 30, ["a", "b"])
        assert len(whole) == len(every) > 0
        assert [h.score for h in every] == pytest.approx([h.score for h in whole], rel=1e-12)
        assert {h.chunk_id for h in every} == {h.chunk_id for h in whole}
        assert service.store.keyword_idf(query, None, ["a", "b"]) == pytest.approx(
            service.store.keyword_idf(query), rel=1e-12
        )
    # After edits, the collections' statistics are those of an index made afresh from the same
    # files (FTS5's own, for the whole table, still count the rows deleted)
    (tmp_path / "a" / "3.md").write_text("Entry 3 was rewritten: the lamp, the lamp.\n")
    (tmp_path / "b" / "4.md").unlink()
    for name in ("a", "b"):
        service.indexer.scan(service.indexer.collections[name])
    sqlite = database.endswith(".db")
    fresh_db = str(tmp_path / "fresh.db") if sqlite else fresh_database(request.getfixturevalue("postgres"))
    fresh = IndexService(Settings(db=fresh_db, max_file_size=100_000))
    try:
        for name in ("a", "b"):
            indexed(fresh, tmp_path / name, name)
        for query in queries:
            for chosen in (["a"], ["b"], ["a", "b"]):
                edited = service.store.search_keyword(query, 30, chosen)
                made = fresh.store.search_keyword(query, 30, chosen)
                assert scored(edited) == scored(made)  # ties aside, chunk ids differ
                assert service.store.keyword_idf(query, None, chosen) == pytest.approx(
                    fresh.store.keyword_idf(query, None, chosen), rel=1e-12
                )
    finally:
        fresh.close()


OLD_COUNT_CHUNKS = """CREATE OR REPLACE FUNCTION ragproxy_count_chunks() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            UPDATE totals SET chunks = chunks + n, tokens = tokens + t
            FROM (SELECT count(*) AS n, coalesce(sum(tokens), 0) AS t FROM changed) s;
        ELSE
            UPDATE totals SET chunks = chunks - n, tokens = tokens - t
            FROM (SELECT count(*) AS n, coalesce(sum(tokens), 0) AS t FROM changed) s;
        END IF;
        RETURN NULL;
    END $$"""


def test_an_index_made_before_collection_totals_is_upgraded_in_place(database: str, tmp_path: Path) -> None:
    """The collections' totals are counted from what the index holds, and kept from then on."""
    import psycopg

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(6):
            (tmp_path / name / f"{i}.md").write_text(f"The {name} keeper {i} trims the lamp {'lamp ' * i}.\n")
    service = IndexService(Settings(db=database))
    for name in ("a", "b"):
        indexed(service, tmp_path / name, name)
    before = scored(service.store.search_keyword("keeper lamp", 10, ["a"]))
    service.close()
    sqlite = database.endswith(".db")
    with connect(database) if sqlite else psycopg.connect(database, autocommit=True) as db:  # as it was
        db.execute("DROP TABLE collection_totals")
        db.execute(f"DELETE FROM _migrations WHERE name = '{'m004' if sqlite else 'm002'}_collection_totals'")
        if not sqlite:
            db.execute(OLD_COUNT_CHUNKS)
    service = IndexService(Settings(db=database))
    try:
        assert scored(service.store.search_keyword("keeper lamp", 10, ["a"])) == before
        (tmp_path / "b" / "new.md").write_text("A lamp keeper, a lamp keeper.\n")
        (tmp_path / "b" / "0.md").unlink()
        indexed(service, tmp_path / "b", "b")
        assert scored(service.store.search_keyword("keeper lamp", 10, ["a"])) == before
        kept = "SELECT collection_id, chunks, tokens FROM collection_totals ORDER BY collection_id"
        if sqlite:
            counted = service.store.reader().execute(
                "SELECT d.collection_id, count(*), sum(fts5_tokens(s.sz)) FROM chunks c "
                "JOIN documents d ON d.id = c.document_id JOIN chunks_fts_docsize s ON s.id = c.id "
                "GROUP BY d.collection_id ORDER BY d.collection_id"
            )
            assert [tuple(r) for r in service.store.reader().execute(kept)] == [tuple(r) for r in counted]
        else:
            with psycopg.connect(database) as db:
                counted = db.execute(
                    "SELECT collection_id, count(*), sum(tokens) FROM chunks GROUP BY collection_id "
                    "ORDER BY collection_id"
                )
                assert db.execute(kept).fetchall() == counted.fetchall()
    finally:
        service.close()


# Chinese documentation as it is written: commands, paths and option names between the sentences
CHINESE_WITH_COMMANDS = (
    "使用 `apt-get install --no-install-recommends package-name` 命令安装软件包，"
    "不安装推荐的软件包。配置文件位于 /etc/apt/apt.conf.d/99norecommends，"
    ' 写入 APT::Install-Recommends "false"; 即可。\n'
)


def test_a_chunks_script_is_told_by_its_prose_not_its_bytes() -> None:
    from proxy.text import written_in_cjk

    assert len(CHINESE_WITH_COMMANDS.encode()) < 1.8 * len(CHINESE_WITH_COMMANDS)  # by bytes: Latin
    assert written_in_cjk(CHINESE_WITH_COMMANDS)
    assert not written_in_cjk("The 灯塔 (lighthouse) keeper trims the lamp before every storm at sea.")
    assert not written_in_cjk("apt-get install --no-install-recommends package-name")


def test_an_index_that_told_scripts_by_bytes_is_upgraded_in_place(database: str, tmp_path: Path) -> None:
    """Each chunk's script is told again; on PostgreSQL a vector that changes script is logged
    out and in again, so the replicas' statistics by script add up to what the index holds."""
    import psycopg

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "zh.md").write_text(CHINESE_WITH_COMMANDS, encoding="utf-8")
    (tmp_path / "docs" / "en.md").write_text("The lighthouse keeper trims the lamp.\n", encoding="utf-8")
    service = IndexService(Settings(db=database))
    indexed(service, tmp_path / "docs")
    service.close()
    sqlite = database.endswith(".db")
    with connect(database) if sqlite else psycopg.connect(database, autocommit=True) as db:  # as it was
        if sqlite:
            db.execute("ALTER TABLE chunks DROP COLUMN cjk")
            db.execute("DELETE FROM _migrations WHERE name = 'm005_chunk_script'")
        else:  # every chunk's script was Latin by its bytes, in the chunks, the vectors and the log
            db.execute("UPDATE chunks SET cjk = false")
            db.execute(
                "CREATE TEMP TABLE kept AS SELECT chunk_id, collection_id, embedding FROM chunk_vectors"
            )
            db.execute("DELETE FROM chunk_vectors")
            db.execute("INSERT INTO chunk_vectors SELECT chunk_id, collection_id, false, embedding FROM kept")
            db.execute("DELETE FROM _migrations WHERE name = 'm003_chunk_script'")
    service = IndexService(Settings(db=database))
    try:
        by_path = (
            "SELECT d.path, c.cjk FROM chunks c JOIN documents d ON d.id = c.document_id ORDER BY d.path"
        )
        if sqlite:
            scripts = [(r[0], bool(r[1])) for r in service.store.reader().execute(by_path)]
        else:
            with psycopg.connect(database) as db:
                scripts = [(r[0], bool(r[1])) for r in db.execute(by_path)]
                vectors = "SELECT cjk, count(*) FROM chunk_vectors GROUP BY cjk ORDER BY cjk"
                logged = (
                    "SELECT cjk, sum(sign) FROM vector_changes GROUP BY cjk "
                    "HAVING sum(sign) <> 0 ORDER BY cjk"
                )
                assert (
                    db.execute(vectors).fetchall() == db.execute(logged).fetchall() == [(False, 1), (True, 1)]
                )
        assert scripts == [("en.md", False), ("zh.md", True)]
        found = service.store.search_keyword("软件包 lighthouse", 5)  # a hit carries what the store holds
        assert {hit.path: hit.cjk for hit in found} == {"en.md": False, "zh.md": True}
    finally:
        service.close()


def test_a_pair_of_chinese_characters_no_chunk_holds_weighs_nothing(
    service: IndexService, tmp_path: Path
) -> None:
    """A Chinese question is searched as pairs of adjacent characters. A pair across two words
    that no chunk holds ("和邮" of "用户名和邮箱") is no word of the index: it weighs nothing in
    the question's total, so the chunk matching every word the index has is strong evidence."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "git.md").write_text(
        "使用 git config 命令配置用户名和电子邮件地址。\n", encoding="utf-8"
    )
    (tmp_path / "docs" / "apt.md").write_text("使用 apt 命令安装软件包。\n", encoding="utf-8")
    indexed(service, tmp_path / "docs")
    question = "怎样给 Git 配置用户名和邮箱"
    weighed = set(service.store.keyword_idf(question))
    assert weighed == {"Git", "配 置", "置 用", "用 户", "户 名", "名 和"}  # not 怎样, 样给, 和邮, 邮箱
    ranking = service.rank(question, 2)
    best = max(ranking.strength, key=lambda chunk: ranking.strength[chunk])
    assert next(h.path for h in ranking.hits if h.chunk_id == best) == "git.md"
    assert ranking.strength[best] > 0.8


# One sentence of each Chinese script, neither held in the other
SIMPLIFIED = "使用 apt 命令安装软件包，并设置默认的文本编辑器。\n"
TRADITIONAL = "遠端主機上的程式，視窗可以顯示在本地的 X 伺服器上。\n"


def test_a_question_in_either_chinese_script_finds_text_written_in_the_other(
    service: IndexService, tmp_path: Path
) -> None:
    """The keyword index holds a Traditional character as its Simplified one, and so does a
    question's search: 怎樣安裝軟件包 finds 安装软件包, 远端主机的视窗 finds 遠端主機 … 視窗."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "simplified.md").write_text(SIMPLIFIED, encoding="utf-8")
    (tmp_path / "docs" / "traditional.md").write_text(TRADITIONAL, encoding="utf-8")
    indexed(service, tmp_path / "docs")
    assert paths(service.store.search_keyword("怎樣安裝軟件包"))[0] == "simplified.md"
    assert paths(service.store.search_keyword("远端主机的视窗"))[0] == "traditional.md"
    assert paths(service.store.search_keyword("遠端主機的視窗"))[0] == "traditional.md"


def test_an_index_made_before_the_chinese_scripts_were_folded_is_upgraded_in_place(
    database: str, tmp_path: Path
) -> None:
    """Each chunk with a Traditional character is keyword-indexed again, folded."""
    import psycopg

    from proxy.index.store.common import embedding_text
    from proxy.index.store.postgres.keywords import tsvector_text
    from proxy.index.textsearch import CJK_CLASS

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "traditional.md").write_text(TRADITIONAL, encoding="utf-8")
    (tmp_path / "docs" / "simplified.md").write_text(SIMPLIFIED, encoding="utf-8")
    service = IndexService(Settings(db=database))
    indexed(service, tmp_path / "docs")
    service.close()
    sqlite = database.endswith(".db")
    # as an index made before held it: each CJK character a token, as written
    select = "SELECT c.id, c.text, c.heading FROM chunks c JOIN documents d ON d.id = c.document_id"
    held = f"{select} WHERE d.path = 'traditional.md'"
    with connect(database) if sqlite else psycopg.connect(database, autocommit=True) as db:
        for chunk_id, text, heading in db.execute(held).fetchall():
            body = embedding_text(text, heading)
            if sqlite:
                spaced = re.sub(f"([{CJK_CLASS}])", r" \1 ", body)
                db.execute("DELETE FROM chunks_fts WHERE rowid = ?", (chunk_id,))
                db.execute("INSERT INTO chunks_fts(rowid, body) VALUES (?, ?)", (chunk_id, spaced))
            else:
                tokens = re.findall(f"[{CJK_CLASS}]|[^\\W_{CJK_CLASS}]+", body.lower())
                keywords = tsvector_text(tokens, {})
                db.execute("UPDATE chunks SET keywords = %s::tsvector WHERE id = %s", (keywords, chunk_id))
        found = (
            "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH '\"远 端\"'"
            if sqlite
            else "SELECT id FROM chunks WHERE keywords @@ '远端'::tsquery"
        )
        assert db.execute(found).fetchall() == []  # the Simplified pair is not there yet
        db.execute(f"DELETE FROM _migrations WHERE name = '{'m006' if sqlite else 'm004'}_hanzi_folded'")
    service = IndexService(Settings(db=database))
    try:
        assert paths(service.store.search_keyword("远端主机的视窗")) == ["traditional.md"]
        assert paths(service.store.search_keyword("安装软件包"))[0] == "simplified.md"  # as it was
        with connect(database) if sqlite else psycopg.connect(database) as db:
            assert len(db.execute(found).fetchall()) == 1
    finally:
        service.close()
